#!/usr/bin/env bash
# Runs the hub (`aihub all`) against local PostgreSQL and NATS (started on
# demand by services.sh). Extra arguments go to `aihub all`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Exports AIHUB__DATABASE__URL / AIHUB__NATS__URL read by the hub's config.
. "$ROOT/scripts/services.sh"

cd "$ROOT"
# Schema first, so `all` never starts against an unmigrated database.
cargo run --release --locked -p hub-server --bin aihub -- migrate
# exec: signals (Ctrl-C, SIGTERM) reach the hub directly.
exec cargo run --release --locked -p hub-server --bin aihub -- all "$@"
