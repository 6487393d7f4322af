#!/bin/sh
# Sarah-PM: the task breakdown.
. "$(dirname "$0")/lib.sh"
step=$1 minutes=$2
case "$step" in
breakdown)
    work "$minutes"
    put docs/auth/tasks.md <<'MD'
# Authentication: tasks

- [ ] Dana-Database: users and auth_tokens tables, row-level security
- [ ] Marcus-Backend: /auth/login, /auth/register, JWT middleware (mock DB first)
- [ ] James-Frontend: Login and Register components, auth context (mock API first)
- [ ] Integration: real database behind the API, real API behind the UI
- [ ] Maria-QA: end-to-end auth flow; Victor-Verifier: security review
MD
    ;;
*) echo "sarah-pm: unknown step $step" >&2; exit 2 ;;
esac
