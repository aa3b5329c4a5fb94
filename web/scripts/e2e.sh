#!/usr/bin/env bash
# The web app's browser tests against a real hub: Debian's Chromium driven by
# playwright-core (web/e2e/run.mjs).
#
#   web/scripts/e2e.sh              build the app and the hub, run the scenario, clean up
#
# It installs Debian's `chromium` when /usr/bin/chromium is missing (apt-get, as root),
# builds web/dist and `aihub` (CARGO_TARGET_DIR, default $HOME/.cache/aihub/target), creates
# a database of its own, starts `aihub all` on a free port with its own NATS stream and
# subject prefixes and a mail folder, runs the scenario (screenshots into docs/ui/), then
# stops the hub, drops the database and deletes the streams.
#
# Environment: AIHUB_TEST_DATABASE_URL and AIHUB_TEST_NATS_URL (scripts/services.sh sets
# them; sourced here when missing), E2E_SKIP_BUILD=1 to use web/dist as it is,
# E2E_SCREENSHOTS=0 to skip the screenshot matrix, E2E_KEEP=1 to leave the hub running
# (prints its address; for development).
set -euo pipefail

WEB="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROOT="$(cd "$WEB/.." && pwd)"
export DEBIAN_FRONTEND=noninteractive

log() { echo "e2e: $*" >&2; }

# --- the browser ---------------------------------------------------------------------
if [[ ! -x /usr/bin/chromium ]]; then
    log "installing Debian's chromium"
    apt-get install -y -q chromium >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }
fi

# --- services ------------------------------------------------------------------------
if [[ -z "${AIHUB_TEST_DATABASE_URL:-}" || -z "${AIHUB_TEST_NATS_URL:-}" ]]; then
    # shellcheck source=/dev/null
    . "$ROOT/scripts/services.sh"
fi

# --- the app and the hub ---------------------------------------------------------------
cd "$WEB"
[[ -d node_modules ]] || npm ci --no-audit --no-fund
if [[ "${E2E_SKIP_BUILD:-0}" != 1 ]]; then
    npm run -s build >/dev/null
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/aihub/target}"
log "building the hub (cargo build -p hub-server)"
(cd "$ROOT" && cargo build -q --locked -p hub-server)
AIHUB="$CARGO_TARGET_DIR/debug/aihub"

# --- a hub of its own ----------------------------------------------------------------
SUFFIX="$(date +%s)_$$"
DB_NAME="aihub_web_e2e_$SUFFIX"
# The test URL names a database to connect to; ours replaces it.
DB_BASE="${AIHUB_TEST_DATABASE_URL%/*}"
DB_URL="$DB_BASE/$DB_NAME"
psql "$AIHUB_TEST_DATABASE_URL" -q -v ON_ERROR_STOP=1 -c "CREATE DATABASE $DB_NAME" >/dev/null
WORK="$(mktemp -d /tmp/aihub-web-e2e.XXXXXX)"
PORT="$(node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')"

export AIHUB__DATABASE__URL="$DB_URL"
export AIHUB__NATS__URL="$AIHUB_TEST_NATS_URL"
export AIHUB__NATS__STREAM_PREFIX="WEBE2E_${SUFFIX}_"
export AIHUB__NATS__SUBJECT_PREFIX="webe2e_${SUFFIX}"
export AIHUB__SERVER__HOST=127.0.0.1
export AIHUB__SERVER__PORT="$PORT"
export AIHUB__SERVER__WEB_DIR="$WEB/dist"
export AIHUB__MAIL__TRANSPORT=folder
export AIHUB__MAIL__FOLDER="$WORK/mail"
export AIHUB__AUTH__COOKIE_SECURE=false
export AIHUB__AUTH__PUBLIC_URL="http://127.0.0.1:$PORT"

HUB_PID=""
cleanup() {
    local status=$?
    if [[ "${E2E_KEEP:-0}" == 1 && $status == 0 ]]; then
        log "hub left running: http://127.0.0.1:$PORT (pid $HUB_PID, database $DB_NAME, mail $WORK/mail)"
        return
    fi
    if [[ -n "$HUB_PID" ]]; then
        kill "$HUB_PID" 2>/dev/null || true
        wait "$HUB_PID" 2>/dev/null || true
    fi
    if [[ $status != 0 ]]; then
        log "the hub's log (last 40 lines):"
        tail -n 40 "$WORK/hub.log" >&2 || true
    fi
    node "$WEB/e2e/nats-clean.mjs" "$AIHUB_TEST_NATS_URL" "$AIHUB__NATS__STREAM_PREFIX" || log "could not delete the test's streams"
    psql "$AIHUB_TEST_DATABASE_URL" -q -c "DROP DATABASE IF EXISTS $DB_NAME WITH (FORCE)" >/dev/null || log "could not drop $DB_NAME"
    rm -rf "$WORK"
}
trap cleanup EXIT

"$AIHUB" migrate >"$WORK/migrate.log" 2>&1
"$AIHUB" admin create-user --email admin@e2e.example --role admin --password 'Sup3r-secret-pass' >"$WORK/admin.log" 2>&1
"$AIHUB" all >"$WORK/hub.log" 2>&1 &
HUB_PID=$!

export E2E_BASE_URL="http://127.0.0.1:$PORT"
export E2E_MAIL_DIR="$WORK/mail"
export E2E_ADMIN_EMAIL=admin@e2e.example
export E2E_ADMIN_PASSWORD='Sup3r-secret-pass'
export E2E_AIHUB="$AIHUB"
export E2E_OUT="${E2E_OUT:-$ROOT/docs/ui}"
export E2E_DIST="$WEB/dist"
node "$WEB/e2e/run.mjs"
