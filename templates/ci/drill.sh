#!/usr/bin/env bash
# A relaunch drill in CI, everything from the CI's secrets; the reports kept for the trend.
#
# Run from the repository root with relaunch installed (fab on the PATH). Environment:
#   RELAUNCH_SITE          the site (inventory/<site>.yml; default example)
#   RELAUNCH_SSH_KEY       relaunch's login key (private, OpenSSH), written 0600 to RELAUNCH_SSH_KEY_PATH
#   RELAUNCH_SSH_KEY_PATH  where the inventory's provider.ssh_key expects it (default ~/.ssh/relaunch_ed25519)
#   RELAUNCH_HOSTS_JSON    the site's hosts.json from the operator's state directory (the pinned host keys)
#   RELAUNCH_SECRET_FILES  base64 of a tar.gz of the inventory's file: secrets, unpacked at the root (made 0600)
#   RELAUNCH_REPORTS       where the reports of earlier runs are (restored from the CI's cache) and go (default ci-reports)
#   the API token and every env: secret of the inventory (DIGITALOCEAN_ACCESS_TOKEN, the restic password, ...)
#   come in as environment variables of the same names.
# Exit status: the drill's (0 only when it passed).
set -euo pipefail
umask 077
site="${RELAUNCH_SITE:-example}"
reports="${RELAUNCH_REPORTS:-ci-reports}"
fab="${RELAUNCH_FAB:-fab}"
export RELAUNCH_STATE_DIR="${RELAUNCH_STATE_DIR:-$HOME/.local/state/relaunch}"
state_site="$RELAUNCH_STATE_DIR/sites/$site"
mkdir -p "$state_site/reports" "$reports"

if [ -n "${RELAUNCH_SSH_KEY:-}" ]; then
  key="${RELAUNCH_SSH_KEY_PATH:-$HOME/.ssh/relaunch_ed25519}"
  mkdir -p "$(dirname "$key")"
  printf '%s\n' "$RELAUNCH_SSH_KEY" > "$key"
  chmod 600 "$key"
fi
if [ -n "${RELAUNCH_HOSTS_JSON:-}" ]; then
  printf '%s\n' "$RELAUNCH_HOSTS_JSON" > "$state_site/hosts.json"
fi
if [ -n "${RELAUNCH_SECRET_FILES:-}" ]; then
  printf '%s' "$RELAUNCH_SECRET_FILES" | base64 -d | tar -xzf - --no-same-owner --no-same-permissions
  # only the files the archive holds, each 0600 (relaunch refuses a secret file others may read)
  printf '%s' "$RELAUNCH_SECRET_FILES" | base64 -d | tar -tzf - | while IFS= read -r f; do
    if [ -f "$f" ]; then chmod 600 "$f"; fi
  done
fi

# the earlier reports go where relaunch looks for the trend
cp -p "$reports"/*.json "$reports"/*.md "$state_site/reports/" 2>/dev/null || true

status=0
"$fab" drill --site "$site" || status=$?

cp -p "$state_site/reports"/* "$reports/" 2>/dev/null || true
echo "drill of $site: exit $status; reports in $reports"
exit "$status"
