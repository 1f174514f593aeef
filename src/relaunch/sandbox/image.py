"""The sandbox's base image: Debian bookworm from Debian's archive, like DigitalOcean's debian-12-x64.

Built with debootstrap (no image registry is reachable here) and imported into Docker
under a tag derived from the recipe, so it is built once and rebuilt only when the
recipe (packages, files, mirror) changes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import docker
import docker.errors

from relaunch.errors import RelaunchError
from relaunch.sandbox import LABEL

log = logging.getLogger(__name__)

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
REPOSITORY = "relaunch-sandbox/debian-12"

#: What DigitalOcean's Debian 12 image has that matters here: systemd as PID 1, sshd,
#: cloud-init, python3. ``locales`` keeps cloud-init's locale module from failing
#: (without it the boot ends "degraded").
#: debootstrap installs the first few; apt-get in the chroot the rest (debootstrap's
#: own dependency ordering fails configuring cloud-init's Python dependencies).
BOOTSTRAP_PACKAGES = ["systemd", "systemd-sysv", "dbus", "ca-certificates", "locales"]
PACKAGES = [
    "openssh-server",
    "cloud-init",
    "python3",
    "iproute2",
    "iputils-ping",
    "netbase",
    "curl",
    "gnupg",
    "sudo",
    "procps",
    "less",
    "rsync",
]

#: Files written into the image. Each is a sandbox-only adaptation of a container to a
#: Droplet's behaviour, and says why.
FILES: dict[str, str] = {
    # Droplets get their user_data and keys from the NoCloud seed the sandbox writes;
    # there is no network to configure inside a container.
    "etc/cloud/cloud.cfg.d/90-relaunch-sandbox.cfg": (
        "# relaunch sandbox: seed comes from /var/lib/cloud/seed/nocloud\n"
        "datasource_list: [ NoCloud, None ]\n"
        "network: {config: disabled}\n"
        "# as on DigitalOcean's images: the ssh_keys go to root, who logs in with them\n"
        "disable_root: false\n"
    ),
    # Docker inside a Droplet container: its data is on a volume of the Droplet's own (ext4,
    # see relaunch.sandbox.docker_backend), where overlay2 works as on a real Droplet; named,
    # so a missing volume fails loudly instead of falling back to vfs. The sandbox's registry
    # (relaunch.sandbox.registry) speaks plain http on its network.
    "etc/docker/daemon.json": (
        '{"storage-driver": "overlay2", "insecure-registries": ["relaunch-sandbox-registry:5000"]}\n'
    ),
    # Units that cannot work in a container and would leave systemd "degraded".
    "etc/systemd/system/systemd-remount-fs.service": "",
    "etc/systemd/system/getty@tty1.service": "",
    "etc/systemd/system/console-getty.service": "",
    "etc/systemd/system/systemd-firstboot.service": "",
    "etc/systemd/system/systemd-udevd.service": "",
    "etc/systemd/system/systemd-modules-load.service": "",
    "etc/systemd/system/sys-kernel-config.mount": "",
    "etc/systemd/system/sys-kernel-debug.mount": "",
    "etc/systemd/system/sys-kernel-tracing.mount": "",
    "etc/locale.gen": "C.UTF-8 UTF-8\nen_US.UTF-8 UTF-8\n",
    "etc/default/locale": "LANG=C.UTF-8\n",
    "etc/hostname": "localhost\n",
}

#: Empty files above mean "mask this unit" (a link to /dev/null is made instead).
_MASK = ""

#: Bump when the build steps below change in a way the lists above do not show.
RECIPE_VERSION = 4


def recipe_hash() -> str:
    """Return a short hash of everything that decides the image's contents."""
    blob = json.dumps(
        {"suite": SUITE, "mirror": MIRROR, "bootstrap": BOOTSTRAP_PACKAGES, "packages": PACKAGES, "files": FILES, "v": RECIPE_VERSION},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def image_tag() -> str:
    """Return the full ``repository:tag`` name of the base image for the current recipe."""
    return f"{REPOSITORY}:{recipe_hash()}"


def ensure_image(client: docker.DockerClient | None = None, progress: Callable[[str], None] | None = None) -> str:
    """Build the base image unless one for the current recipe exists; return its tag.

    Raise RelaunchError if debootstrap or the import fails (its output is in the message).
    """
    client = client or docker.from_env()
    tag = image_tag()
    try:
        client.images.get(tag)
        log.debug("base image %s present", tag)
        return tag
    except docker.errors.ImageNotFound:
        pass
    say = progress or (lambda msg: log.info("%s", msg))
    if shutil.which("debootstrap") is None:
        raise RelaunchError("building the sandbox image needs debootstrap: apt-get install debootstrap")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="relaunch-image-") as tmp:
        root = Path(tmp) / "root"
        say(f"building sandbox image {tag} from {MIRROR} (debootstrap {SUITE}, a few minutes)")
        _run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(BOOTSTRAP_PACKAGES)}",
                SUITE,
                str(root),
                MIRROR,
            ],
            "debootstrap",
        )
        say("installing sshd, cloud-init and the rest into the image")
        _install(root, PACKAGES)
        _customise(root)
        tarball = Path(tmp) / "rootfs.tar"
        with tarfile.open(tarball, "w") as tar:
            tar.add(root, arcname=".")
        say("importing the image into Docker")
        client.api.import_image_from_file(
            str(tarball),
            repository=REPOSITORY,
            tag=recipe_hash(),
            changes=[
                'CMD ["/sbin/init"]',
                "ENV container=docker",
                f'LABEL {LABEL}="base" relaunch.recipe="{recipe_hash()}"',
            ],
        )
    log.info("built %s in %.0f s", tag, time.monotonic() - started)
    return tag


def _install(root: Path, packages: list[str]) -> None:
    """apt-get install into the chroot, with services kept from starting (policy-rc.d)."""
    policy = root / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}
    try:
        _run(["chroot", str(root), "apt-get", "update", "-q"], "apt-get update (image)", env)
        _run(
            ["chroot", str(root), "apt-get", "install", "-y", "-q", "--no-install-recommends", *packages],
            "apt-get install (image)",
            env,
        )
        _run(["chroot", str(root), "apt-get", "clean"], "apt-get clean (image)", env)
    finally:
        policy.unlink()


def _customise(root: Path) -> None:
    """Write the recipe's files and make the image boot like a fresh Droplet."""
    for rel, text in FILES.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink() or path.exists():
            path.unlink()
        if text == _MASK and rel.startswith("etc/systemd/system/"):
            path.symlink_to("/dev/null")
        else:
            path.write_text(text)
    _run(["chroot", str(root), "locale-gen"], "locale-gen")
    # Every Droplet must get its own host keys and machine id: cloud-init makes new
    # host keys per instance (relaunch injects pinned ones), systemd a new machine id.
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (root / "etc/machine-id").write_text("")
    dbus_id = root / "var/lib/dbus/machine-id"
    if dbus_id.exists() or dbus_id.is_symlink():
        dbus_id.unlink()
    # Root logs in with keys only, as on DigitalOcean.
    (root / "etc/ssh/sshd_config.d").mkdir(exist_ok=True)
    (root / "etc/ssh/sshd_config.d/50-relaunch-sandbox.conf").write_text("PermitRootLogin prohibit-password\n")
    shutil.rmtree(root / "var/cache/apt/archives", ignore_errors=True)
    (root / "var/cache/apt/archives/partial").mkdir(parents=True, exist_ok=True)
    for lists in (root / "var/lib/apt/lists").glob("*_dists_*"):
        lists.unlink()


def _run(cmd: list[str], what: str, env: dict[str, str] | None = None) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-3000:]
        raise RelaunchError(f"{what} failed (exit {proc.returncode}) while building the sandbox image:\n{tail}")
