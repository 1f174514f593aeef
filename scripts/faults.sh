#!/usr/bin/env bash
# Set everything up (scripts/setup.sh) and run the whole fault suite (tests/faults) in the sandbox.
# It ends with a table (case, expected, observed) and "N passed, N failed"; the table is also
# written to faults-table.md. `.ci/run` runs one case of each class; this runs them all.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "== running the fault suite"
status=0
RELAUNCH_FAULTS=all RELAUNCH_FAULTS_TABLE="$PWD/faults-table.md" .venv/bin/pytest tests/faults "$@" || status=$?
exit "$status"
