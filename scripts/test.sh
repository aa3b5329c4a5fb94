#!/usr/bin/env bash
# Runs the workspace tests against local PostgreSQL and NATS (started on
# demand by services.sh). Extra arguments go to `cargo test`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Exports AIHUB_TEST_DATABASE_URL / AIHUB_TEST_NATS_URL read by the tests.
. "$ROOT/scripts/services.sh"

cd "$ROOT"
# --locked: CI and fresh machines must build exactly what Cargo.lock says.
exec cargo test --workspace --locked "$@"
