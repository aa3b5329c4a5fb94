#!/usr/bin/env bash
# The official OpenAI, Anthropic and MCP Python SDKs, unchanged, against a real hub
# (tests/sdk/test_sdks.py).
#
# Makes a virtualenv with the pinned SDKs (tests/sdk/requirements.txt, from PyPI) under
# ~/.cache/aihub/sdk-venv, starts a hub of its own (tests/support/live-hub.sh) and runs the
# checks. Called by scripts/test.sh; runs on its own as well.
set -euo pipefail

SDK="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$SDK/../.." && pwd)"
log() { echo "sdk: $*" >&2; }

# --- the SDKs ----------------------------------------------------------------------------
VENV="${AIHUB_SDK_VENV:-$HOME/.cache/aihub/sdk-venv}"
# shellcheck source=../support/venv.sh
. "$ROOT/tests/support/venv.sh"
ensure_venv "$VENV" "$SDK/requirements.txt"

# --- the hub ---------------------------------------------------------------------------
# shellcheck source=../support/live-hub.sh
. "$ROOT/tests/support/live-hub.sh"
start_live_hub sdk

log "running the SDK checks against $HUB_BASE_URL"
SDK_BASE_URL="$HUB_BASE_URL" \
SDK_ADMIN_EMAIL="$HUB_ADMIN_EMAIL" \
SDK_ADMIN_PASSWORD="$HUB_ADMIN_PASSWORD" \
    "$VENV/bin/python" "$SDK/test_sdks.py"
