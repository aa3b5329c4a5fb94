#!/usr/bin/env bash
# The web app's whole test run: npm ci, the build (type check included), the unit tests
# (Vitest) and the browser tests against a real hub (scripts/e2e.sh).
# Called by the repository's scripts/test.sh; runs on its own as well.
set -euo pipefail

WEB="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$WEB"

echo "web: npm ci" >&2
npm ci --no-audit --no-fund --loglevel=error
echo "web: build" >&2
npm run -s build
echo "web: unit tests" >&2
npx vitest run
echo "web: browser tests" >&2
E2E_SKIP_BUILD=1 "$WEB/scripts/e2e.sh"
