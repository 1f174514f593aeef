"""backup install: the runner's config, units and store files rendered from the example inventory; no secret leaks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from relaunch.backup import install
from relaunch.backup.commands import database_specs
from relaunch.errors import RelaunchError
from relaunch.inventory import load

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "inventory" / "example.yml"
RESTIC_PW = "restic-Pw$ 'q\"9"
SECRETS_VALUES = {"file:../secrets/example/restic-password": RESTIC_PW,
                  "file:../secrets/example/blog-db-password": "blog-Pw-77",
                  "file:../secrets/example/stats-db-password": "stats-Pw-88"}
COMPOSE = ["docker-compose"]


class FakeSecret:
    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value


@pytest.fixture
def secrets() -> dict[str, FakeSecret]:
    return {ref: FakeSecret(v) for ref, v in SECRETS_VALUES.items()}


STORE = install.StoreHost(alias="backup.example.test", address="10.9.8.7", host_key="ssh-ed25519 AAAAC3Nza-store-key")


def by_path(files):
    return {f.path: f for f in files}


def test_render_backup_files_puts_secrets_only_in_0600_secret_files(secrets) -> None:
    files = install.render_backup_files(load(EXAMPLE), secrets, COMPOSE, STORE)
    for f in files:
        text = f.content.decode(errors="replace")
        for value in SECRETS_VALUES.values():
            if value in text:
                assert f.secret and f.mode == 0o600, f"{f.path} holds a secret"
    pw = by_path(files)[install.RESTIC_PASSWORD_FILE]
    assert pw.content == RESTIC_PW.encode() and pw.mode == 0o600 and pw.secret
    config = by_path(files)[install.CONFIG_PATH]
    assert not config.secret and config.mode == 0o600
    assert [f.path for f in files if f.secret] == [install.RESTIC_PASSWORD_FILE]


def test_backup_config_holds_argv_lists_and_paths_not_values(secrets) -> None:
    files = install.render_backup_files(load(EXAMPLE), secrets, COMPOSE, STORE)
    config = json.loads(by_path(files)[install.CONFIG_PATH].content)
    assert config["site"] == "example" and len(config["inventory_sha256"]) == 64
    assert config["retention"] == {"keep_within_hours": 24, "daily": 14, "weekly": 8}
    assert config["local_keep_last"] == install.LOCAL_KEEP_LAST  # the full history is off-host
    assert [d["name"] for d in config["databases"]] == ["blog", "stats", "notes"]
    assert all(isinstance(d["argv"], list) and all(isinstance(a, str) for a in d["argv"]) for d in config["databases"])
    assert {a["app"]: a["paths"] for a in config["archives"]} == {
        "blog": ["/srv/blog/uploads", "/var/lib/docker/volumes/blog_thumbs/_data"],  # its named volume too
        "stats": ["/srv/stats"], "notes": ["/srv/notes"]}
    # the notes database lives under /srv/notes: dumped on its own, never copied live into the archive
    notes = next(a for a in config["archives"] if a["app"] == "notes")
    assert notes["exclude"] == ["/srv/notes/notes.db", "/srv/notes/notes.db-wal", "/srv/notes/notes.db-shm",
                                "/srv/notes/notes.db-journal"]
    off = config["offsite"]
    assert off["repository"] == "sftp:restic@backup.example.test:/srv/restic/example"
    assert off["password_file"] == install.RESTIC_PASSWORD_FILE
    assert off["options"] == ["-o", f"sftp.command=ssh -F {install.STORE_SSH_CONFIG} restic@backup.example.test -s sftp"]


def test_store_files_pin_the_store_host_key(secrets) -> None:
    files = by_path(install.render_backup_files(load(EXAMPLE), secrets, COMPOSE, STORE))
    ssh = files[install.STORE_SSH_CONFIG].content.decode()
    assert "HostName 10.9.8.7" in ssh and "StrictHostKeyChecking yes" in ssh and f"IdentityFile {install.STORE_KEY}" in ssh
    assert "HostKeyAlias backup.example.test" in ssh and "BatchMode yes" in ssh
    assert files[install.STORE_KNOWN_HOSTS].content == b"backup.example.test ssh-ed25519 AAAAC3Nza-store-key\n"


def test_units_oneshot_service_and_timer_from_the_interval(secrets) -> None:
    files = by_path(install.render_backup_files(load(EXAMPLE), secrets, COMPOSE, STORE))
    service = files["/etc/systemd/system/relaunch-backup.service"].content.decode()
    assert "Type=oneshot" in service and "SuccessExitStatus=75" in service
    assert f"ExecStart=/usr/bin/python3 {install.RUNNER_PATH} --config {install.CONFIG_PATH} run" in service
    timer = files["/etc/systemd/system/relaunch-backup.timer"].content.decode()
    assert "OnCalendar=*-*-* *:00/15:00" in timer and "Persistent=true" in timer and "RandomizedDelaySec=60" in timer
    fast = by_path(install.render_backup_files(load(EXAMPLE), secrets, COMPOSE, STORE, interval_minutes=1))
    assert "OnCalendar=*-*-* *:*:00" in fast["/etc/systemd/system/relaunch-backup.timer"].content.decode()


@pytest.mark.parametrize(("minutes", "expected"), [
    (1, "*-*-* *:*:00"), (15, "*-*-* *:00/15:00"), (30, "*-*-* *:00/30:00"), (60, "*-*-* 00/1:00:00"),
    (360, "*-*-* 00/6:00:00"), (45, None), (90, None), (7, None),
])
def test_timer_schedule(minutes: int, expected: str | None) -> None:
    assert install.timer_schedule(minutes) == expected


def test_runner_files_are_the_package_sources(secrets) -> None:
    files = by_path(install.render_backup_files(load(EXAMPLE), secrets, COMPOSE))
    runner = files[install.RUNNER_PATH]
    assert runner.mode == 0o755 and runner.content.startswith(b"#!/usr/bin/python3\n")
    assert b"def plan(" in files[install.RETENTION_PATH].content
    assert install.STORE_SSH_CONFIG not in files  # no store host known: the user's own ssh setup


def test_database_specs_no_password_on_argv() -> None:
    specs = database_specs(load(EXAMPLE), COMPOSE)
    flat = " ".join(" ".join(s["argv"]) for s in specs)
    assert "password" not in flat.lower() or "--no-password" in flat
    assert all(v not in flat for v in SECRETS_VALUES.values())
    blog = specs[0]
    assert "docker exec -i" in blog["argv"][2]  # the blog database is a Compose service


@pytest.mark.parametrize("repo", ["s3:https://x/y", "sftp:host", "sftp://u@h:22//p", "sftp:u@h:relative"])
def test_parse_sftp_rejects_other_forms(repo: str) -> None:
    with pytest.raises(RelaunchError):
        install.parse_sftp(repo)


def test_parse_sftp() -> None:
    assert install.parse_sftp("sftp:restic@backup.example.test:/srv/restic/example") == install.SftpRepository(
        "restic", "backup.example.test", "/srv/restic/example")


def with_mariadb_fingerprint(inv, value):
    return inv.model_copy(update={"backups": inv.backups.model_copy(update={"mariadb_fingerprint": value})})


def test_database_specs_mariadb_fingerprint_paired_by_default_scratch_or_turned_off() -> None:
    inv = load(EXAMPLE)
    assert inv.backups.mariadb_fingerprint == "paired"
    specs = {s["name"]: s for s in database_specs(inv, COMPOSE)}
    assert specs["blog"]["fingerprint_method"] == "shared-snapshot"
    assert specs["notes"]["fingerprint_method"] == "dumped-copy"
    stats = specs["stats"]
    assert stats["fingerprint_method"] == "paired-snapshot"
    paired = stats["paired"]
    assert paired["database"] == "stats" and paired["lock_wait_s"] == 5 and paired["hold_max_s"] == 30
    assert paired["fingerprint_argv"][4] == "mariadb-paired"  # python3 -c DRIVER ENGINE MODE ...
    assert "-- Table structure for table " in paired["dump_markers"]
    # the scratch way stays ready, for when writes cannot be paused
    assert stats["scratch_restore"]["database"] == "stats_relaunch_fp"
    assert stats["scratch_restore"]["stream_argv"][-1] == "stats_relaunch_fp"  # the client, fed the dump on stdin
    for value in (True, "paired"):
        assert {s["name"]: s for s in database_specs(with_mariadb_fingerprint(inv, value), COMPOSE)}["stats"] == stats
    scratch = {s["name"]: s for s in database_specs(with_mariadb_fingerprint(inv, "scratch"), COMPOSE)}["stats"]
    assert "paired" not in scratch and scratch["fingerprint_method"] == "scratch-restore"
    assert scratch["scratch_restore"] == stats["scratch_restore"]
    stats = {s["name"]: s for s in database_specs(with_mariadb_fingerprint(inv, False), COMPOSE)}["stats"]
    assert "scratch_restore" not in stats and "paired" not in stats
    assert stats["fingerprint_method"] is None and stats["fingerprint_note"]


@pytest.mark.parametrize("interval", [1, 15, 60, 1440])
def test_every_runner_deadline_is_under_the_units_timeout(secrets, interval: int) -> None:
    files = by_path(install.render_backup_files(load(EXAMPLE), secrets, COMPOSE, STORE, interval_minutes=interval))
    config = json.loads(files[install.CONFIG_PATH].content)
    unit = files[f"{install.UNIT_DIR}/{install.SERVICE}"].content.decode()
    unit_timeout = int(unit.split("TimeoutStartSec=")[1].split()[0])
    assert set(config["timeouts"]) == {"dump", "command", "restic", "docker"}
    assert all(0 < t < unit_timeout for t in config["timeouts"].values()), (config["timeouts"], unit_timeout)


def test_backup_config_names_the_compose_apps_and_the_retention_floor(secrets) -> None:
    config = install.backup_config(load(EXAMPLE), COMPOSE, STORE)
    assert config["compose_apps"] == [{"app": "blog", "services": ["db", "web"]}]
    assert config["min_free_percent"] > 0
    assert "prune_interval_hours" not in config  # the host never prunes (relaunch.backup.prune, the operator's)


APPEND_ONLY_STORE = install.StoreHost(alias="backup.example.test", address="10.9.8.7",
                                      host_key="ssh-ed25519 AAAAC3Nza-store-key", append_only=True)


def test_an_append_only_store_is_reached_through_rclones_restic_server_over_the_pinned_ssh(secrets) -> None:
    files = by_path(install.render_backup_files(load(EXAMPLE), secrets, COMPOSE, APPEND_ONLY_STORE))
    off = json.loads(files[install.CONFIG_PATH].content)["offsite"]
    assert off["repository"] == "rclone:backup.example.test:/srv/restic/example"
    # restic runs this program for its rclone backend; the store's forced command answers whatever it is asked
    assert off["options"] == ["-o", f"rclone.program=ssh -F {install.STORE_SSH_CONFIG} restic@backup.example.test"]
    assert off["append_only"] is True
    assert "StrictHostKeyChecking yes" in files[install.STORE_SSH_CONFIG].content.decode()  # same pinned host key
    sftp = json.loads(by_path(install.render_backup_files(load(EXAMPLE), secrets, COMPOSE, STORE))[install.CONFIG_PATH].content)
    assert sftp["offsite"]["append_only"] is False


def test_authorized_line_forces_one_server_per_kind_of_access() -> None:
    pub = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample relaunch-backup@prod"
    assert install.authorized_line(pub) == \
        'restrict,command="/usr/lib/openssh/sftp-server" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample relaunch-backup'
    assert install.authorized_line(pub, read_only=True, comment="relaunch-read-only").startswith(
        'restrict,command="/usr/lib/openssh/sftp-server -R" ssh-ed25519 ')
    line = install.authorized_line(pub, append_only_repo="/srv/restic/example")
    assert line.startswith('restrict,command="rclone serve restic --stdio --config=/dev/null --append-only '
                           '/srv/restic/example" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample ')
    spaced = install.authorized_line(pub, append_only_repo="/srv/my repo")
    assert "--append-only '/srv/my repo'\" ssh-ed25519" in spaced  # quoted for the shell sshd runs it with


@pytest.mark.parametrize("path", ['/srv/a"b', "/srv/a'b", "/srv/a\\b", "/srv/a\nb", "relative/path", "/srv/a\x07b"])
def test_authorized_line_refuses_a_path_it_cannot_carry_safely(path: str) -> None:
    with pytest.raises(RelaunchError, match="authorized_keys"):
        install.authorized_line("ssh-ed25519 AAAAkey", append_only_repo=path)


def test_authorized_line_refuses_what_is_not_a_public_key() -> None:
    with pytest.raises(RelaunchError, match="not an SSH public key"):
        install.authorized_line("-----BEGIN OPENSSH PRIVATE KEY-----")


def test_public_line_of_a_private_key_is_its_public_half(tmp_path: Path) -> None:
    from relaunch.remote import ensure_client_key

    public = ensure_client_key(tmp_path / "id_ed25519")
    assert install.public_line_of((tmp_path / "id_ed25519").read_text()).split()[:2] == public.split()[:2]
    with pytest.raises(ValueError):
        install.public_line_of("not a key")


class LocalConn:
    """Runs the store-side script here, with getent/chown/install/rclone faked on PATH onto a temporary home."""

    host = "store"

    def __init__(self, tmp_path: Path) -> None:
        import os

        self.home = tmp_path / "home"
        bindir = tmp_path / "bin"
        bindir.mkdir()
        fakes = {"getent": f'echo "restic:x:999:999::{self.home}:/bin/sh"', "chown": "exit 0", "rclone": "exit 0",
                 "install": 'while [ $# -gt 1 ]; do case "$1" in -o|-g|-m) shift 2;; -d) shift;; *) break;; esac; done; '
                            'mkdir -p "$1"'}
        for name, body in fakes.items():
            (bindir / name).write_text(f"#!/bin/sh\n{body}\n")
            (bindir / name).chmod(0o755)
        self.env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}"}

    def run(self, command: str, **_: object):
        import subprocess
        from types import SimpleNamespace

        done = subprocess.run(["/bin/sh", "-c", command], env=self.env, capture_output=True, text=True, timeout=30)
        return SimpleNamespace(ok=done.returncode == 0, exited=done.returncode, stdout=done.stdout, stderr=done.stderr)

    def keys(self) -> list[str]:
        return (self.home / ".ssh/authorized_keys").read_text().splitlines()


def test_authorize_store_key_migrates_an_sftp_key_to_append_only_and_leaves_other_keys(tmp_path: Path) -> None:
    conn = LocalConn(tmp_path)
    production, operator = "ssh-ed25519 AAAAprod relaunch-backup@prod", "ssh-ed25519 AAAAoperator relaunch"
    assert install.authorize_store_key(conn, "restic", operator, comment="relaunch-operator")
    assert install.authorize_store_key(conn, "restic", production)  # an older install: SFTP, full access
    assert install.authorize_store_key(conn, "restic", production, append_only_repo="/srv/restic/example")  # migrated
    assert conn.keys() == [install.authorized_line(operator, comment="relaunch-operator"),
                           install.authorized_line(production, append_only_repo="/srv/restic/example")]
    assert not install.authorize_store_key(conn, "restic", production, append_only_repo="/srv/restic/example")
    assert len(conn.keys()) == 2  # idempotent
    assert (conn.home / ".ssh/authorized_keys").stat().st_mode & 0o077 == 0
