"""What a host runs beyond a plain Debian, from its state manifest alone: how ``fab init NAME --from ADDRESS`` starts.

``fab drift`` compares production with a *reference* (the manifest of a host a rebuild or
drill built). A server met for the first time has none, so :func:`baseline` makes one
from the host's own manifest: what any Debian server has and a rebuild's base brings —
every package installed as a dependency, the packages of priority required, important and
standard, relaunch's base packages, and the files, units, cron jobs and ports those
packages own. Compared with that (:func:`relaunch.drift.compare.compare`), what is left is
what someone set up on purpose: packages installed by hand (with their units, files and
ports folded in), files under /etc of no package, units, timers and cron jobs nothing
installed, Compose projects and containers, databases, users, nginx server names. That is
what :mod:`relaunch.drift.draft` turns into inventory and runbook drafts.

The baseline cannot see a package's file changed by hand (a manifest holds checksums, not
the package's own); ``fab drift`` after the first drill can. Secrets never leave the host
(see :mod:`relaunch.drift.hostscript`), so none can reach a draft.
"""

from __future__ import annotations

from typing import Any

from relaunch.drift.compare import Comparison, compare

#: Debian's priorities of a base system: installed by the installer, not by the server's owner.
BASE_PRIORITIES = ("required", "important", "standard")
#: Packages a Droplet or relaunch's bootstrap brings that a hand-built server has marked manual too.
BASE_PACKAGES = frozenset({
    "ca-certificates", "curl", "gnupg", "rsync", "tzdata", "openssh-server", "openssh-client", "openssh-sftp-server",
    "cloud-init", "cloud-guest-utils", "python3", "sudo", "locales", "systemd", "systemd-sysv", "systemd-timesyncd",
    "dbus", "ifupdown", "netbase", "iproute2", "isc-dhcp-client", "linux-image-amd64", "linux-image-cloud-amd64",
    "grub-pc", "grub-efi-amd64", "grub-cloud-amd64", "initramfs-tools", "unattended-upgrades", "apt-listchanges",
    "droplet-agent", "do-agent", "wget", "less", "vim", "nano", "bash-completion", "man-db", "qemu-guest-agent",
    "iputils-ping", "procps",
})
#: Users every Debian server has with a login shell.
BASE_USERS = frozenset({"root"})


def _base_package(name: str, entry: dict[str, Any]) -> bool:
    return (not entry.get("manual")) or entry.get("priority") in BASE_PRIORITIES or name in BASE_PACKAGES


def baseline(manifest: dict[str, Any]) -> dict[str, Any]:
    """A reference of "a plain Debian server" made from ``manifest`` itself (see the module's docstring)."""
    packages = {n: p for n, p in (manifest.get("packages") or {}).items() if _base_package(n, p)}
    base = set(packages)

    def owned(entry: dict[str, Any]) -> bool:
        return bool(entry.get("package")) and entry.get("package") in base

    return {
        "packages": packages,
        "etc": {p: e for p, e in (manifest.get("etc") or {}).items() if owned(e)},
        "units": {n: u for n, u in (manifest.get("units") or {}).items() if owned(u)},
        "cron": [c for c in manifest.get("cron") or [] if owned(c)],
        "ports": [p for p in manifest.get("ports") or [] if owned(p) or p.get("process") == "sshd"],
        "users": {n: u for n, u in (manifest.get("users") or {}).items() if n in BASE_USERS},
    }


def from_host(manifest: dict[str, Any], ignore: list[str] | None = None) -> Comparison:
    """What the host of ``manifest`` has beyond a plain Debian server, as drift findings."""
    return compare(manifest, baseline(manifest), ignore=ignore or ())
