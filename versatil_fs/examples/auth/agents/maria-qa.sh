#!/bin/sh
# Maria-QA: the end-to-end auth flow tests.
. "$(dirname "$0")/lib.sh"
step=$1 minutes=$2
case "$step" in
e2e)
    work "$minutes"
    checkpoint_or_fail
    test -f app/api/routes/auth.py && test -f app/ui/components/Login.tsx
    put app/tests/e2e/test_auth_flow.py <<'PY'
def test_register_then_login(client):
    client.post("/auth/register", json={"email": "a@b.c", "password": "pw"})
    token = client.post("/auth/login", json={"email": "a@b.c", "password": "pw"}).json()
    assert token["token"]
PY
    ;;
*) echo "maria-qa: unknown step $step" >&2; exit 2 ;;
esac
