# Shared by the scripted agents (sourced). Each agent spends its estimate, scaled by
# $AUTH_MINUTE seconds per minute, and writes real files; see ../plan.yaml.
set -eu
minute=${AUTH_MINUTE:-0.05}

# work MINUTES: spend that much (scaled) agent time.
work() {
    sleep "$(awk -v m="$1" -v s="$minute" 'BEGIN { printf "%.3f", m * s }')"
}

# put PATH: write stdin to PATH (repo-relative), creating its directory.
put() {
    mkdir -p "$(dirname "$1")"
    cat > "$1"
    echo "$VERSATIL_AGENT wrote $1"
}

# checkpoint_or_fail: with AUTH_FAIL=<this task>, stop here, half done, with an error.
checkpoint_or_fail() {
    if [ "${AUTH_FAIL:-}" = "${VERSATIL_TASK:-}" ]; then
        echo "$VERSATIL_AGENT: $VERSATIL_TASK failed half-way (AUTH_FAIL=$AUTH_FAIL)" >&2
        exit 1
    fi
}

# maybe_stray: with AUTH_STRAY=<this task>, also touch a file this task holds no lock on.
maybe_stray() {
    if [ "${AUTH_STRAY:-}" = "${VERSATIL_TASK:-}" ]; then
        echo "<!-- $VERSATIL_AGENT fixed a typo here without a lock -->" >> README.md
        echo "$VERSATIL_AGENT also edited README.md (no lock)"
    fi
}
