#!/usr/bin/env bash
# Set everything up (scripts/setup.sh) and start the local sandbox cloud, then show it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/fab sandbox-up
.venv/bin/fab sandbox-status
