#!/bin/sh
# Victor-Verifier: a security review of what was built.
. "$(dirname "$0")/lib.sh"
step=$1 minutes=$2
case "$step" in
security)
    work "$minutes"
    checkpoint_or_fail
    {
        echo "# Authentication: security review"
        echo
        if grep -q "ROW LEVEL SECURITY" app/db/policies.sql; then
            echo "- [x] row-level security on users"
        else
            echo "- [ ] row-level security on users: MISSING"
        fi
        if grep -q '"exp"' app/api/middleware/jwt.py; then
            echo "- [x] tokens expire"
        else
            echo "- [ ] tokens expire: MISSING"
        fi
    } | put docs/auth/security-review.md
    ;;
*) echo "victor-verifier: unknown step $step" >&2; exit 2 ;;
esac
