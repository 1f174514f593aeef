#!/usr/bin/env bash
# Set up relaunch on a fresh Debian 12 machine, as root: system packages, Docker,
# a virtualenv with the Python dependencies, and the sandbox base image.
# Idempotent: steps already done are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
# A docker client alone (no daemon) is not Docker: decide by dockerd.
command -v dockerd >/dev/null || need_apt+=(docker.io)
command -v debootstrap >/dev/null || need_apt+=(debootstrap)
python3 -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3-venv)
# The tests read rendered env and compose files back with Compose v1 itself (`docker-compose config`)
# and option files with MariaDB's own parser (`my_print_defaults`).
command -v docker-compose >/dev/null || need_apt+=(docker-compose)
command -v my_print_defaults >/dev/null || need_apt+=(mariadb-client-core)
if ((${#need_apt[@]})); then
    echo "== installing ${need_apt[*]}"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need_apt[@]}"
fi

if ! docker info >/dev/null 2>&1; then
    echo "== starting dockerd (log: /var/log/relaunch-dockerd.log)"
    # Detached from this script's output, so callers reading it see EOF when we end.
    setsid dockerd </dev/null >/var/log/relaunch-dockerd.log 2>&1 &
    for _ in $(seq 1 120); do
        docker info >/dev/null 2>&1 && break
        sleep 0.5
    done
    docker info >/dev/null 2>&1 || { echo "dockerd did not start; see /var/log/relaunch-dockerd.log" >&2; exit 1; }
fi

python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "relaunch needs Python >= 3.11" >&2; exit 1; }
if [ ! -x .venv/bin/python ]; then
    echo "== creating .venv"
    python3 -m venv .venv
fi
echo "== installing Python dependencies"
.venv/bin/pip install -q --disable-pip-version-check -e '.[test]'

echo "== sandbox base image"
start=$(date +%s)
.venv/bin/python -m relaunch.sandbox image
echo "   (took $(( $(date +%s) - start )) s)"
