# Sourced by the scripts that test a real `aihub all` from outside (tests/sdk/run.sh,
# tests/contract/run.sh): builds `aihub` (CARGO_TARGET_DIR), creates a database of its own,
# starts the hub with the mock provider on a free port with its own NATS stream and subject
# prefixes and an admin ($HUB_ADMIN_EMAIL / $HUB_ADMIN_PASSWORD), and on exit stops it, drops
# the database and deletes the streams. Sets HUB_BASE_URL and HUB_WORK (a scratch folder).
#
#   start_live_hub NAME   # NAME: a short word, used in the database and stream names
#
# Extra AIHUB__* settings may be exported before the call; LIVE_HUB_KEEP_LOG=FILE keeps the
# hub's log there.

: "${ROOT:?ROOT must name the repository}"
live_hub_log() { echo "${LIVE_HUB_NAME:-hub}: $*" >&2; }

if [[ -z "${AIHUB_TEST_DATABASE_URL:-}" || -z "${AIHUB_TEST_NATS_URL:-}" ]]; then
    # shellcheck source=/dev/null
    . "$ROOT/scripts/services.sh"
fi

HUB_ADMIN_EMAIL="admin@tests.example"
HUB_ADMIN_PASSWORD='Live-hub-pass-1'
HUB_PID=""

stop_live_hub() {
    local status=$?
    if [[ -n "$HUB_PID" ]]; then
        kill "$HUB_PID" 2>/dev/null || true
        wait "$HUB_PID" 2>/dev/null || true
    fi
    if [[ -n "${LIVE_HUB_KEEP_LOG:-}" && -f "$HUB_WORK/hub.log" ]]; then
        cp "$HUB_WORK/hub.log" "$LIVE_HUB_KEEP_LOG"
    fi
    if [[ $status != 0 && -f "$HUB_WORK/hub.log" ]]; then
        live_hub_log "the hub's log (last 40 lines):"
        tail -n 40 "$HUB_WORK/hub.log" >&2 || true
    fi
    node "$ROOT/web/e2e/nats-clean.mjs" "$AIHUB_TEST_NATS_URL" "$AIHUB__NATS__STREAM_PREFIX" \
        || live_hub_log "could not delete the run's streams"
    psql "$AIHUB_TEST_DATABASE_URL" -q -c "DROP DATABASE IF EXISTS $LIVE_HUB_DB WITH (FORCE)" >/dev/null \
        || live_hub_log "could not drop $LIVE_HUB_DB"
    rm -rf "$HUB_WORK"
}

start_live_hub() {
    LIVE_HUB_NAME="$1"
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/aihub/target}"
    live_hub_log "building the hub (cargo build -p hub-server)"
    (cd "$ROOT" && cargo build -q --locked -p hub-server)
    local aihub="$CARGO_TARGET_DIR/debug/aihub"

    local suffix
    suffix="$(date +%s)_$$"
    LIVE_HUB_DB="aihub_${LIVE_HUB_NAME}_$suffix"
    psql "$AIHUB_TEST_DATABASE_URL" -q -v ON_ERROR_STOP=1 -c "CREATE DATABASE $LIVE_HUB_DB" >/dev/null
    HUB_WORK="$(mktemp -d "/tmp/aihub-$LIVE_HUB_NAME.XXXXXX")"
    local port
    port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')"

    export AIHUB__DATABASE__URL="${AIHUB_TEST_DATABASE_URL%/*}/$LIVE_HUB_DB"
    export AIHUB__NATS__URL="$AIHUB_TEST_NATS_URL"
    export AIHUB__NATS__STREAM_PREFIX="${LIVE_HUB_NAME^^}_${suffix}_"
    export AIHUB__NATS__SUBJECT_PREFIX="${LIVE_HUB_NAME}_${suffix}"
    export AIHUB__SERVER__HOST=127.0.0.1
    export AIHUB__SERVER__PORT="$port"
    export AIHUB__MAIL__TRANSPORT=folder
    export AIHUB__MAIL__FOLDER="$HUB_WORK/mail"
    trap stop_live_hub EXIT

    "$aihub" migrate >"$HUB_WORK/migrate.log" 2>&1
    "$aihub" admin create-user --email "$HUB_ADMIN_EMAIL" --role admin \
        --password "$HUB_ADMIN_PASSWORD" >"$HUB_WORK/admin.log" 2>&1
    "$aihub" all >"$HUB_WORK/hub.log" 2>&1 &
    HUB_PID=$!
    HUB_BASE_URL="http://127.0.0.1:$port"
    for _ in $(seq 1 300); do
        if python3 -c "import urllib.request; urllib.request.urlopen('$HUB_BASE_URL/ready', timeout=1)" 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    live_hub_log "the hub did not become ready"
    return 1
}
