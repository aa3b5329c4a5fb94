#!/usr/bin/env bash
# Checks formatting and lints, then runs the workspace tests against local PostgreSQL and
# NATS (started on demand by services.sh), then the web app's tests (unit and browser).
# Extra arguments go to `cargo test`.
#
# The build cache lives outside the clone (CARGO_TARGET_DIR, by default
# ~/.cache/aihub/target) so that a fresh clone on a machine that built before reuses it;
# a machine without one builds from scratch.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if ! command -v cargo >/dev/null 2>&1 && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/aihub/target}"

cd "$ROOT"
# Lints first: a formatting slip or a clippy warning fails the run before the long part.
cargo fmt --all --check
# --locked: CI and fresh machines must build exactly what Cargo.lock says.
cargo clippy --workspace --all-targets --locked -- -D warnings

# Exports AIHUB_TEST_DATABASE_URL / AIHUB_TEST_NATS_URL read by the tests.
. "$ROOT/scripts/services.sh"
cargo test --workspace --locked "$@"

# The official OpenAI, Anthropic and MCP Python SDKs (PyPI, in a virtualenv) against a real hub.
"$ROOT/tests/sdk/run.sh"

# The contract: schemathesis (PyPI, in a virtualenv) fuzzes /openapi.json against a real hub,
# bounded in cases per operation and in time.
"$ROOT/tests/contract/run.sh"

# The web app: npm ci, build, unit tests (Vitest), and the browser tests against a real hub
# in Debian's Chromium (installed when missing). Screenshots go to a folder of the run's
# own; `web/scripts/e2e.sh` alone refreshes docs/ui/.
E2E_OUT="$(mktemp -d /tmp/aihub-e2e-out.XXXXXX)"
export E2E_OUT
"$ROOT/web/scripts/test.sh"
rm -rf "$E2E_OUT"
