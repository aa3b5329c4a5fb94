#!/usr/bin/env bash
# The official OpenAI, Anthropic and MCP Python SDKs, unchanged, against a real hub
# (tests/sdk/test_sdks.py).
#
# Makes a virtualenv with the pinned SDKs (tests/sdk/requirements.txt, from PyPI) under
# ~/.cache/aihub/sdk-venv, builds `aihub` (CARGO_TARGET_DIR), creates a database of its own,
# starts `aihub all` with the mock provider on a free port with its own NATS stream and
# subject prefixes, runs the checks, then stops the hub, drops the database and deletes the
# streams. Called by scripts/test.sh; runs on its own as well.
set -euo pipefail

SDK="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$SDK/../.." && pwd)"
log() { echo "sdk: $*" >&2; }

if [[ -z "${AIHUB_TEST_DATABASE_URL:-}" || -z "${AIHUB_TEST_NATS_URL:-}" ]]; then
    # shellcheck source=/dev/null
    . "$ROOT/scripts/services.sh"
fi

# --- the SDKs ----------------------------------------------------------------------------
VENV="${AIHUB_SDK_VENV:-$HOME/.cache/aihub/sdk-venv}"
STAMP="$VENV/.requirements"
if [[ ! -x "$VENV/bin/python" ]] || ! cmp -s "$SDK/requirements.txt" "$STAMP"; then
    log "installing the SDKs into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check -r "$SDK/requirements.txt"
    cp "$SDK/requirements.txt" "$STAMP"
fi

# --- the hub -----------------------------------------------------------------------------
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/aihub/target}"
log "building the hub (cargo build -p hub-server)"
(cd "$ROOT" && cargo build -q --locked -p hub-server)
AIHUB="$CARGO_TARGET_DIR/debug/aihub"

SUFFIX="$(date +%s)_$$"
DB_NAME="aihub_sdk_$SUFFIX"
DB_URL="${AIHUB_TEST_DATABASE_URL%/*}/$DB_NAME"
psql "$AIHUB_TEST_DATABASE_URL" -q -v ON_ERROR_STOP=1 -c "CREATE DATABASE $DB_NAME" >/dev/null
WORK="$(mktemp -d /tmp/aihub-sdk.XXXXXX)"
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')"

export AIHUB__DATABASE__URL="$DB_URL"
export AIHUB__NATS__URL="$AIHUB_TEST_NATS_URL"
export AIHUB__NATS__STREAM_PREFIX="SDK_${SUFFIX}_"
export AIHUB__NATS__SUBJECT_PREFIX="sdk_${SUFFIX}"
export AIHUB__SERVER__HOST=127.0.0.1
export AIHUB__SERVER__PORT="$PORT"
export AIHUB__MAIL__TRANSPORT=folder
export AIHUB__MAIL__FOLDER="$WORK/mail"

HUB_PID=""
cleanup() {
    local status=$?
    if [[ -n "$HUB_PID" ]]; then
        kill "$HUB_PID" 2>/dev/null || true
        wait "$HUB_PID" 2>/dev/null || true
    fi
    if [[ $status != 0 ]]; then
        log "the hub's log (last 40 lines):"
        tail -n 40 "$WORK/hub.log" >&2 || true
    fi
    node "$ROOT/web/e2e/nats-clean.mjs" "$AIHUB_TEST_NATS_URL" "$AIHUB__NATS__STREAM_PREFIX" \
        || log "could not delete the run's streams"
    psql "$AIHUB_TEST_DATABASE_URL" -q -c "DROP DATABASE IF EXISTS $DB_NAME WITH (FORCE)" >/dev/null \
        || log "could not drop $DB_NAME"
    rm -rf "$WORK"
}
trap cleanup EXIT

"$AIHUB" migrate >"$WORK/migrate.log" 2>&1
"$AIHUB" admin create-user --email sdk@tests.example --role admin --password 'Sdk-tests-pass-1' >"$WORK/admin.log" 2>&1
"$AIHUB" all >"$WORK/hub.log" 2>&1 &
HUB_PID=$!

for _ in $(seq 1 200); do
    if python3 -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$PORT/ready', timeout=1)" 2>/dev/null; then
        break
    fi
    sleep 0.1
done

log "running the SDK checks against http://127.0.0.1:$PORT"
SDK_BASE_URL="http://127.0.0.1:$PORT" \
SDK_ADMIN_EMAIL=sdk@tests.example \
SDK_ADMIN_PASSWORD='Sdk-tests-pass-1' \
    "$VENV/bin/python" "$SDK/test_sdks.py"
