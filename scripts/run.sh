#!/usr/bin/env bash
# Runs the hub (`aihub all`) against local PostgreSQL and NATS (started on
# demand by services.sh). Extra arguments go to `aihub all`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Exports AIHUB__DATABASE__URL / AIHUB__NATS__URL read by the hub's config.
. "$ROOT/scripts/services.sh"

cd "$ROOT"
# The web app, served at / from web/dist: built when missing or older than its sources.
if command -v npm >/dev/null 2>&1; then
    if [[ ! -f web/dist/index.html ]] || [[ -n "$(find web/src web/index.html web/package.json web/vite.config.ts -newer web/dist/index.html -print -quit)" ]]; then
        (cd web && { [[ -d node_modules ]] || npm ci --no-audit --no-fund --loglevel=error; } && npm run -s build)
    fi
else
    echo "run.sh: npm not found; serving the API without the web app" >&2
fi
# Schema first, so `all` never starts against an unmigrated database.
cargo run --release --locked -p hub-server --bin aihub -- migrate
# exec: signals (Ctrl-C, SIGTERM) reach the hub directly.
exec cargo run --release --locked -p hub-server --bin aihub -- all "$@"
