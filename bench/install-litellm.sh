#!/usr/bin/env bash
# Installs LiteLLM's proxy (PyPI `litellm[proxy]`) into .tools/litellm, for the side-by-side
# run of `aihub-bench gateway --litellm .tools/litellm/bin/litellm`. Prints the executable.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.tools/litellm"
VERSION="${LITELLM_VERSION:-}"
if [ ! -x "$VENV/bin/litellm" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --upgrade pip
  "$VENV/bin/pip" install --quiet "litellm[proxy]${VERSION:+==$VERSION}"
fi
"$VENV/bin/python" -c 'import importlib.metadata as m; print("litellm", m.version("litellm"))' >&2
echo "$VENV/bin/litellm"
