#!/usr/bin/env bash
# Set everything up (scripts/setup.sh) and run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "== running the test suite"
start=$(date +%s)
status=0
.venv/bin/pytest "$@" || status=$?
echo "== test suite took $(( $(date +%s) - start )) s"
exit "$status"
