#!/usr/bin/env bash
# Set up relaunch on a fresh Debian 12 machine, as root: system packages, Docker,
# a virtualenv with the Python dependencies, and the sandbox base image.
# Idempotent: steps already done are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

# The Debian packages this machine still needs, one per line. Decided by what each
# package really provides, not by a look-alike: a docker client alone (no daemon) is
# not Docker, and Debian's python3 imports venv without python3-venv (ensurepip is in it).
missing_packages() {
    { command -v dockerd && command -v docker; } >/dev/null || echo docker.io
    command -v debootstrap >/dev/null || echo debootstrap
    python3 -c 'import venv, ensurepip' 2>/dev/null || echo python3-venv
    # The tests read rendered env and compose files back with Compose v1 itself (`docker-compose config`)
    # and option files with MariaDB's own parser (`my_print_defaults`).
    command -v docker-compose >/dev/null || echo docker-compose
    command -v my_print_defaults >/dev/null || echo mariadb-client-core
    # `fab backup --prune` forgets and prunes off-host backups from this machine (production's store key is append-only).
    command -v restic >/dev/null || echo restic
}

# --print-missing: say what would be installed and change nothing (the tests run this).
if [ "${1:-}" = "--print-missing" ]; then
    missing_packages
    exit 0
fi

mapfile -t need_apt < <(missing_packages)
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
