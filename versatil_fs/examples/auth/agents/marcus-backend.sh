#!/bin/sh
# Marcus-Backend: the auth endpoints and JWT middleware, first against a mock database.
. "$(dirname "$0")/lib.sh"
step=$1 minutes=$2
case "$step" in
backend)
    work "$(awk -v m="$minutes" 'BEGIN { print m / 2 }')"
    put app/api/db.py <<'PY'
"""Mock database until connect-db swaps in the real one."""
USERS: dict[str, dict[str, str]] = {}
PY
    put app/api/routes/auth.py <<'PY'
from app.api import db
from app.api.middleware.jwt import issue


def register(email: str, password_hash: str) -> dict[str, str]:
    db.USERS[email] = {"email": email, "password_hash": password_hash}
    return {"email": email}


def login(email: str, password_hash: str) -> dict[str, str]:
    user = db.USERS.get(email)
    if user is None or user["password_hash"] != password_hash:
        raise PermissionError("bad credentials")
    return {"token": issue(email)}
PY
    maybe_stray
    checkpoint_or_fail
    work "$(awk -v m="$minutes" 'BEGIN { print m / 2 }')"
    put app/api/middleware/jwt.py <<'PY'
import base64
import json
import time


def issue(subject: str, ttl: int = 3600) -> str:
    claims = {"sub": subject, "exp": int(time.time()) + ttl}
    return base64.urlsafe_b64encode(json.dumps(claims).encode()).decode()
PY
    ;;
connect-db)
    work "$minutes"
    checkpoint_or_fail
    put app/api/db.py <<'PY'
"""The real database (schema: app/db/schema.sql)."""
import os

DSN = os.environ.get("DATABASE_URL", "postgresql://localhost/auth")
USERS: dict[str, dict[str, str]] = {}  # cache in front of the users table
PY
    ;;
*) echo "marcus-backend: unknown step $step" >&2; exit 2 ;;
esac
