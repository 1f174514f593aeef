#!/usr/bin/env bash
# Set everything up (scripts/setup.sh), then bring the bundled example site up on a
# sandbox "production" Droplet (fab sandbox-up --site example), then show the sandbox.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/fab sandbox-up --site example "$@"
.venv/bin/fab sandbox-status
