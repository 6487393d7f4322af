#!/bin/sh
# James-Frontend: Login and Register components and the auth context, first against a mock API.
. "$(dirname "$0")/lib.sh"
step=$1 minutes=$2
case "$step" in
frontend)
    work "$(awk -v m="$minutes" 'BEGIN { print m / 2 }')"
    put app/ui/context/AuthContext.tsx <<'TSX'
import { createContext } from "react";
export const AuthContext = createContext<{ token: string | null }>({ token: null });
TSX
    put app/ui/api.ts <<'TS'
// Mock API until connect-api points the UI at the real one.
export const login = async (email: string) => ({ token: `mock-${email}` });
TS
    checkpoint_or_fail
    work "$(awk -v m="$minutes" 'BEGIN { print m / 2 }')"
    put app/ui/components/Login.tsx <<'TSX'
import { login } from "../api";
export const Login = () => <form onSubmit={() => login("me@example.com")}>Log in</form>;
TSX
    put app/ui/components/Register.tsx <<'TSX'
export const Register = () => <form>Create an account</form>;
TSX
    ;;
connect-api)
    put app/ui/api.ts <<'TS'
// The real API (see app/api/routes/auth.py).
export const login = async (email: string) =>
  (await fetch("/auth/login", { method: "POST", body: JSON.stringify({ email }) })).json();
TS
    checkpoint_or_fail
    work "$minutes"
    ;;
*) echo "james-frontend: unknown step $step" >&2; exit 2 ;;
esac
