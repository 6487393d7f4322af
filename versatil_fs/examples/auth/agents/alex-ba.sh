#!/bin/sh
# Alex-BA: the requirements and the API contract every other agent builds against.
. "$(dirname "$0")/lib.sh"
step=$1 minutes=$2
case "$step" in
contract)
    work "$minutes"
    put docs/auth/contract.md <<'MD'
# Authentication: API contract

POST /auth/register  {email, password}        -> 201 {id, email}
POST /auth/login     {email, password}        -> 200 {token, expires_at}
GET  /auth/me        Authorization: Bearer T  -> 200 {id, email}

Passwords are stored as salted hashes; tokens are JWTs valid for one hour.
MD
    ;;
*) echo "alex-ba: unknown step $step" >&2; exit 2 ;;
esac
