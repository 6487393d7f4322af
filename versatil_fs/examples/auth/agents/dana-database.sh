#!/bin/sh
# Dana-Database: schema, migrations and row-level security policies.
. "$(dirname "$0")/lib.sh"
step=$1 minutes=$2
case "$step" in
database)
    work "$(awk -v m="$minutes" 'BEGIN { print m / 2 }')"
    put app/db/migrations/001_users.sql <<'SQL'
CREATE TABLE users (
    id            BIGSERIAL PRIMARY KEY,
    email         TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
SQL
    checkpoint_or_fail
    work "$(awk -v m="$minutes" 'BEGIN { print m / 2 }')"
    put app/db/migrations/002_auth_tokens.sql <<'SQL'
CREATE TABLE auth_tokens (
    token      TEXT PRIMARY KEY,
    user_id    BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    expires_at TIMESTAMPTZ NOT NULL
);
SQL
    put app/db/policies.sql <<'SQL'
ALTER TABLE users ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_row ON users USING (id = current_setting('app.user_id')::BIGINT);
SQL
    cat app/db/migrations/*.sql | put app/db/schema.sql
    ;;
*) echo "dana-database: unknown step $step" >&2; exit 2 ;;
esac
