#!/usr/bin/env bash
# The main job on a fresh machine: set everything up (scripts/setup.sh), bring the bundled
# example site up on a sandbox "production" Droplet when it is not there (fab sandbox-up
# --site example: seeded, backups installed, one taken), then rehearse its rebuild:
# fab drill, which restores the newest backup into a scratch Droplet, verifies it,
# destroys the scratch Droplet and prints the report's summary. Extra arguments go to fab drill.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/fab sandbox-up --site example
.venv/bin/fab drill --site example "$@"
