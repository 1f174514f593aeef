"""relaunch.transfer between two real Droplets: the new host pulls straight from the old one.

Two sandbox Droplets, "old" and "new" (Debian, rsync). The new host gets a temporary link
to the old one; a tree with awkward names, links, modes, owners and an xattr is pulled
and the listings computed on both hosts match; a copy killed part-way resumes from its
part; dumps land (or pipe into a command) with the sha256 the old host sees; closing
the link leaves neither the key on the old host nor the directory on the new one, and
ends the sessions still open; a wrong pinned key makes the new host refuse the old one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from fabric import Connection

from relaunch import transfer
from relaunch.cloud import Cloud, Droplet
from relaunch.databases import RemoteCommand, run
from relaunch.errors import RelaunchError
from relaunch.remote import HostKey, connect, wait_for_ssh

pytestmark = pytest.mark.sandbox
log = logging.getLogger(__name__)

TAG = "relaunch-transfer-test"
TREE = "/srv/odd"
BIG = "/srv/big"
BIG_MB = 50

# Made on the old host: names that break naive tools, a symlink to a file, to a directory
# and dangling, a hard link, a fifo, modes incl. setgid, owners with and without names,
# an xattr.
MAKE_TREE = r"""
import os
root = "/srv/odd"
os.makedirs(root + "/sub dir/deeper", exist_ok=True)
def w(rel, data, mode=0o644, owner=None):
    p = os.path.join(root, rel)
    with open(p, "wb") as fh:
        fh.write(data)
    os.chmod(p, mode)
    if owner:
        os.chown(p, *owner)
w("plain.txt", b"hello\n")
w("with space.txt", b"x" * 100000, 0o640, (33, 33))
w("new\nline", b"newline\n")
w("-leading-dash", b"dash\n", 0o755)
w("café ünïcode ✓", "ünïcode\n".encode())
w(os.fsdecode(b"latin1-\xe9"), b"not utf-8\n")
w("sub dir/secret", b"secret\n", 0o600, (4242, 4343))
w("sub dir/deeper/empty", b"")
os.chown(root + "/sub dir", 0, 4343)
os.chmod(root + "/sub dir", 0o2750)
os.symlink("plain.txt", root + "/link-to-plain")
os.symlink("sub dir", root + "/link-to-dir")
os.symlink("/nowhere/at/all", root + "/dangling")
os.lchown(root + "/dangling", 33, 33)
os.link(root + "/plain.txt", root + "/sub dir/hard")
os.mkfifo(root + "/fifo", 0o620)
os.setxattr(root + "/plain.txt", "user.relaunch", b"kept")
print("made")
"""


def user_data(host_key: HostKey) -> str:
    return "#cloud-config\n" + yaml.safe_dump(host_key.cloud_config())


def make_host(cloud: Cloud, client_key: tuple[Path, str], name: str) -> tuple[Droplet, HostKey, Connection]:
    key = cloud.ensure_ssh_key(client_key[1], "relaunch-test")
    host_key = HostKey.generate()
    droplet = cloud.create_droplet(name=name, region="fra1", size="s-1vcpu-1gb", image="debian-12-x64",
                                   ssh_keys=[key.fingerprint], user_data=user_data(host_key), tags=[TAG],
                                   ssh_timeout=180)
    conn = connect(droplet.ipv4, host_key.public_line, client_key[0])
    wait_for_ssh(conn, timeout=180)
    sh(conn, "cloud-init status --wait >/dev/null 2>&1 || true; command -v rsync >/dev/null || "
             "(apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q rsync) >/dev/null")
    return droplet, host_key, conn


def sh(conn: Connection, command: str, timeout: float = 300, warn: bool = False) -> str:
    res = conn.run(command, hide=True, in_stream=False, timeout=timeout, warn=warn)
    return res.stdout.strip() if not warn else f"{res.exited}|{res.stdout.strip()}|{res.stderr.strip()}"


@pytest.fixture(scope="module")
def hosts(sandbox_api, client_key) -> Iterator[dict]:
    with Cloud(token="sandbox-test-token", endpoint=sandbox_api.url, poll_interval=0.2, poll_max_interval=1.0) as c:
        try:
            old, old_key, old_conn = make_host(c, client_key, "transfer-old")
            new, _, new_conn = make_host(c, client_key, "transfer-new")
            yield {"old": old_conn, "old_key": old_key.public_line, "new": new_conn, "old_ip": old.ipv4}
            old_conn.close()
            new_conn.close()
        finally:
            c.destroy_droplets_by_tag(TAG)


@pytest.fixture(scope="module")
def odd(hosts) -> str:
    assert run(hosts["old"], RemoteCommand(("python3", "-")), stdin=MAKE_TREE.encode()).strip() == b"made"
    return TREE


def test_pull_tree_copies_everything_and_listings_match(hosts, odd) -> None:
    old, new = hosts["old"], hosts["new"]
    # what the new host already has there is made equal: a stale file goes, a wrong one is fixed
    sh(new, f"mkdir -p {TREE} && echo stale > {TREE}/stale.txt && echo wrong > {TREE}/plain.txt")
    seen: list[tuple[int, int | None]] = []
    with transfer.link(old, hosts["old_key"], new) as ln:
        copy = transfer.pull_tree(ln, TREE, new, progress=lambda done, total: seen.append((done, total)))
    # 9 regular files (the hard link's second name counted, sent once; the empty one made, not sent:
    # 8, the wrong plain.txt of the same size written in the same second included);
    # rsync's total size counts the symlinks' targets too
    assert (copy.files, copy.transferred) == (9, 8)
    assert copy.bytes == (100000 + 6 + 8 + 5 + 10 + 10 + 7 + 0 + 6) + len("plain.txt" "sub dir" "/nowhere/at/all")
    assert seen and seen[-1][0] > 0
    expected = transfer.tree_listing(old, TREE)
    actual = transfer.tree_listing(new, TREE)
    assert transfer.compare_listings(expected, actual) == []
    assert transfer.verify_tree(old, new, TREE) == []
    assert "stale.txt" not in actual
    assert actual["sub dir/hard"].hardlink == "plain.txt"
    assert actual["link-to-dir"][:1] == ("l",) and actual["link-to-dir"].content == "sub dir"
    assert actual["dangling"][3:5] == (33, 33)
    assert actual["sub dir/secret"][2:5] == (0o600, 4242, 4343)
    assert actual["sub dir"].mode == 0o2750 and actual["fifo"].type == "p"
    assert {"new\nline", "-leading-dash", "café ünïcode ✓", "latin1-\udce9"} <= actual.keys()
    assert sh(new, f"getfattr --version >/dev/null 2>&1; python3 -c 'import os; print(os.getxattr(\"{TREE}/plain.txt\", \"user.relaunch\"))'") == "b'kept'"
    # a second run has nothing to send
    with transfer.link(old, hosts["old_key"], new) as ln:
        again = transfer.pull_tree(ln, TREE, new)
    assert again.transferred == 0 and again.literal == 0


def test_listing_shows_what_differs_after_a_change_on_the_new_host(hosts, odd) -> None:
    old, new = hosts["old"], hosts["new"]
    with transfer.link(old, hosts["old_key"], new) as ln:
        transfer.pull_tree(ln, TREE, new)
    sh(new, f"chmod 0644 '{TREE}/sub dir/secret' && rm -- {TREE}/-leading-dash && echo more >> '{TREE}/with space.txt'")
    diff = transfer.verify_tree(old, new, TREE)
    assert diff[0] == "missing: -leading-dash"
    assert diff[1] == "differs: sub dir/secret (mode 0600 != 0644)"
    assert diff[2].startswith("differs: with space.txt (size 100000 != 100005, sha256 ")


def big_tree(hosts) -> None:
    sh(hosts["old"], f"mkdir -p {BIG} && test -s {BIG}/big.bin || "
                     f"(head -c {BIG_MB * 1024 * 1024} /dev/urandom > {BIG}/big.bin && echo small > {BIG}/small)")
    sh(hosts["new"], f"rm -rf {BIG}")


def resume(hosts) -> None:
    """The copy part-way left a part aside; a new run reuses it and the tree comes out whole."""
    old, new = hosts["old"], hosts["new"]
    part = int(sh(new, f"stat -c %s {BIG}/{transfer.PARTIAL_DIR}/big.bin"))
    assert 10 * 1024 * 1024 < part < BIG_MB * 1024 * 1024
    assert sh(new, f"test -e {BIG}/big.bin && echo there || echo absent") == "absent"  # never under its real name
    with transfer.link(old, hosts["old_key"], new) as ln:
        resumed = transfer.pull_tree(ln, BIG, new)
    log.info("resumed: %s (the part was %d bytes)", resumed, part)
    assert resumed.matched >= part - 1024 * 1024  # the part was reused, not sent again
    assert resumed.literal <= BIG_MB * 1024 * 1024 - part + 1024 * 1024
    assert sh(new, f"test -e {BIG}/{transfer.PARTIAL_DIR} && echo left || echo gone") == "gone"
    assert transfer.verify_tree(old, new, BIG) == []


def test_copy_cut_off_by_a_broken_link_resumes_where_it_stopped(hosts) -> None:
    old, new = hosts["old"], hosts["new"]
    big_tree(hosts)
    with transfer.link(old, hosts["old_key"], new) as ln:
        failed: list[BaseException] = []
        reached = threading.Event()

        def progress(done: int, total: int | None) -> None:
            if done > 15 * 1024 * 1024:
                reached.set()

        def copy() -> None:
            try:
                transfer.pull_tree(ln, BIG, new, progress=progress, bwlimit=8000)
            except BaseException as exc:  # noqa: BLE001
                failed.append(exc)

        worker = threading.Thread(target=copy)
        worker.start()
        assert reached.wait(60), "the copy never got 15 MB far"
        # the link breaks part-way: everything using it on the new host ends
        sh(new, f"pkill -TERM -f -- {ln.directory}/id", warn=True)
        worker.join(60)
    assert failed and isinstance(failed[0], RelaunchError), failed
    assert "interrupted (run it again: it continues where it stopped)" in str(failed[0])
    resume(hosts)


def test_copy_stopped_by_ctrl_c_closes_the_link_and_resumes(hosts) -> None:
    old, new = hosts["old"], hosts["new"]
    big_tree(hosts)

    def progress(done: int, total: int | None) -> None:
        if done > 15 * 1024 * 1024:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        with transfer.link(old, hosts["old_key"], new) as ln:
            transfer.pull_tree(ln, BIG, new, progress=progress, bwlimit=8000)
    assert ln.token not in sh(old, "cat ~/.ssh/authorized_keys")
    assert sh(new, "ls /run/relaunch | wc -l; pgrep -x rsync | wc -l").split() == ["0", "0"]
    resume(hosts)


def test_pull_dump_lands_with_the_sha256_the_old_host_sees(hosts) -> None:
    old, new = hosts["old"], hosts["new"]
    sh(old, "mkdir -p /var/tmp/src && head -c 7000000 /dev/urandom > /var/tmp/src/dump.bin")
    want = sh(old, "sha256sum /var/tmp/src/dump.bin").split()[0]
    target = "/var/tmp/pulled.dump"
    with transfer.link(old, hosts["old_key"], new) as ln:
        got = transfer.pull_dump(ln, RemoteCommand(("cat", "/var/tmp/src/dump.bin"), "the test dump"), new, target)
        assert (got.bytes, got.sha256) == (7000000, want)
        assert sh(new, f"sha256sum {target}").split()[0] == want
        assert sh(new, f"stat -c %a {target}") == "600"

        with pytest.raises(RelaunchError) as failed:
            transfer.pull_dump(ln, RemoteCommand(("sh", "-c", "head -c 1000 /var/tmp/src/dump.bin; "
                                                  "echo 'pg_dump: database gone' >&2; exit 4"), "a dump that fails"),
                               new, "/var/tmp/failed.dump")
        message = str(failed.value)
        assert hosts["old_ip"] in message and new.host in message
        assert "a dump that fails exit 4: pg_dump: database gone" in message
        assert sh(new, "ls /var/tmp/failed.dump* 2>/dev/null | wc -l") == "0"

        into = transfer.pull_dump_into(ln, RemoteCommand(("cat", "/var/tmp/src/dump.bin")), new,
                                       RemoteCommand(("sh", "-c", "cat > /var/tmp/restored.bin"), "the restore"))
        assert (into.bytes, into.sha256) == (7000000, want)
        assert sh(new, "sha256sum /var/tmp/restored.bin").split()[0] == want
        with pytest.raises(RelaunchError, match=r"(?s)new host .*the restore exit 3: restore said no"):
            transfer.pull_dump_into(ln, RemoteCommand(("cat", "/var/tmp/src/dump.bin")), new,
                                    RemoteCommand(("sh", "-c", "head -c 10 >/dev/null; echo restore said no >&2; exit 3"),
                                                  "the restore"))


def test_pull_dump_restoring_keeps_the_whole_file_whatever_the_restore_does(hosts) -> None:
    old, new = hosts["old"], hosts["new"]
    sh(old, "mkdir -p /var/tmp/src && head -c 5000000 /dev/urandom > /var/tmp/src/tee.bin")
    want = sh(old, "sha256sum /var/tmp/src/tee.bin").split()[0]
    dump = RemoteCommand(("cat", "/var/tmp/src/tee.bin"), "the test dump")
    with transfer.link(old, hosts["old_key"], new) as ln:
        both = transfer.pull_dump_restoring(ln, dump, new, "/var/tmp/tee.dump",
                                            RemoteCommand(("sh", "-c", "cat > /var/tmp/tee-restored.bin"), "the restore"))
        assert (both.bytes, both.sha256, both.restored, both.restore_error) == (5000000, want, True, "")
        assert sh(new, "sha256sum /var/tmp/tee.dump /var/tmp/tee-restored.bin | cut -d' ' -f1 | uniq") == want
        assert sh(new, "stat -c %a /var/tmp/tee.dump") == "600"

        # a restore that stops reading after 10 bytes: the file still gets all 5 MB, the failure is reported apart
        gone = transfer.pull_dump_restoring(ln, dump, new, "/var/tmp/tee2.dump", RemoteCommand(
            ("sh", "-c", "head -c 10 >/dev/null; echo restore said no >&2; exit 3"), "the restore"))
        assert (gone.bytes, gone.sha256, gone.restored) == (5000000, want, False)
        assert "the restore exit 3: restore said no" in gone.restore_error and new.host in gone.restore_error
        assert sh(new, "sha256sum /var/tmp/tee2.dump").split()[0] == want

        with pytest.raises(RelaunchError, match="a dump that fails exit 4"):
            transfer.pull_dump_restoring(ln, RemoteCommand(("sh", "-c", "head -c 1000 /var/tmp/src/tee.bin; exit 4"),
                                                           "a dump that fails"),
                                         new, "/var/tmp/tee3.dump", RemoteCommand(("sh", "-c", "cat >/dev/null")))
        assert sh(new, "ls /var/tmp/tee3.dump* 2>/dev/null | wc -l") == "0"


def test_archive_listing_verifies_a_tree_restored_from_a_backup_archive(hosts, odd) -> None:
    """The backup runner's own archive_files, run on the old host; the archive extracted elsewhere."""
    old = hosts["old"]
    root = Path(__file__).resolve().parents[2] / "src/relaunch/backup"
    old.put(str(root / "runner.py"), "/tmp/relaunch_runner.py")
    old.put(str(root / "retention.py"), "/tmp/relaunch_retention.py")
    old.put(str(root.parent / "webhook.py"), "/tmp/relaunch_webhook.py")
    sh(old, "cd /tmp && python3 -c 'import relaunch_runner as r, pathlib; "
            f"r.archive_files({{\"app\": \"odd\", \"paths\": [\"{TREE}\"]}}, pathlib.Path(\"/tmp/odd.tar.gz\"))' >/dev/null")
    stored = transfer.archive_listing(old, "/tmp/odd.tar.gz", [TREE])[TREE]
    assert transfer.compare_listings(transfer.tree_listing(old, TREE), stored) == []  # symlinks to directories too
    sh(old, "rm -rf /tmp/restored && mkdir /tmp/restored && tar -xzpf /tmp/odd.tar.gz --numeric-owner -C /tmp/restored")
    restored = transfer.tree_listing(old, f"/tmp/restored{TREE}")
    assert transfer.compare_listings(stored, restored) == []
    sh(old, f"chown 1:1 '/tmp/restored{TREE}/café ünïcode ✓'")
    assert transfer.compare_listings(stored, transfer.tree_listing(old, f"/tmp/restored{TREE}")) == [
        "differs: café ünïcode ✓ (owner 0:0 != 1:1)"
    ]


def test_a_sudoer_on_the_old_host_is_enough(hosts, odd, client_key) -> None:
    """Logged in as a passwordless sudoer, not root: rsync and dumps run through ``sudo -n`` there."""
    old, new = hosts["old"], hosts["new"]
    sh(old, "id admin >/dev/null 2>&1 || useradd -m -s /bin/bash admin; install -d -m 700 -o admin -g admin ~admin/.ssh; "
            "install -m 600 -o admin -g admin ~/.ssh/authorized_keys ~admin/.ssh/authorized_keys; "
            "echo 'admin ALL=(ALL) NOPASSWD: ALL' > /etc/sudoers.d/admin; chmod 440 /etc/sudoers.d/admin")
    admin = connect(old.host, hosts["old_key"], client_key[0], user="admin")
    wait_for_ssh(admin, timeout=60)
    sh(new, f"rm -rf {TREE}")
    try:
        with transfer.link(admin, hosts["old_key"], new) as ln:
            assert ln.sudo and ln.token in sh(old, "cat ~admin/.ssh/authorized_keys")
            assert ln.token not in sh(old, "cat ~/.ssh/authorized_keys")
            transfer.pull_tree(ln, TREE, new)
            got = transfer.pull_dump(ln, RemoteCommand(("cat", f"{TREE}/sub dir/secret")), new, "/var/tmp/secret.copy")
        assert ln.token not in sh(old, "cat ~admin/.ssh/authorized_keys")
    finally:
        admin.close()
    assert transfer.verify_tree(old, new, TREE) == []  # root-only files and owners too
    assert (got.bytes, sh(new, "cat /var/tmp/secret.copy")) == (7, "secret")


def test_missing_source_tree_is_a_clear_error(hosts) -> None:
    with transfer.link(hosts["old"], hosts["old_key"], hosts["new"]) as ln:
        with pytest.raises(RelaunchError, match="/srv/not-there is not a directory on the old host"):
            transfer.pull_tree(ln, "/srv/not-there", hosts["new"])


def test_closing_the_link_leaves_no_key_and_no_access(hosts) -> None:
    old, new = hosts["old"], hosts["new"]
    with transfer.link(old, hosts["old_key"], new) as ln:
        assert ln.token in sh(old, "cat ~/.ssh/authorized_keys")
        assert sh(new, f"stat -c '%a %U' {ln.directory} {ln.directory}/id").splitlines() == ["700 root", "600 root"]
        # a leftover copy of the key, and a session still open when the link closes
        sh(new, f"cp {ln.directory}/id /root/kept-id && chmod 600 /root/kept-id")
        sh(new, f"nohup {' '.join(ln.command(['sleep', '600']))} >/dev/null 2>&1 &")
        time.sleep(1)
        assert sh(new, f"pgrep -f -- '[{ln.directory[0]}]{ln.directory[1:]}/id' | wc -l") == "1"
        argv = " ".join(a.replace(f"{ln.directory}/id", "/root/kept-id") for a in ln.command(["echo", "in"]))
        assert sh(new, argv) == "in"
    assert ln.token not in sh(old, "cat ~/.ssh/authorized_keys")
    assert sh(new, f"test -e {ln.directory} && echo left || echo gone") == "gone"
    # the open session was ended ([/]: pgrep's own shell must not match)
    assert sh(new, f"pgrep -f -- '[{ln.directory[0]}]{ln.directory[1:]}/id' | wc -l") == "0"
    # the key itself no longer opens the old host (known_hosts is gone too: accept the key for this check only)
    argv = argv.replace(f"UserKnownHostsFile={ln.directory}/known_hosts", "UserKnownHostsFile=/dev/null")
    argv = argv.replace("StrictHostKeyChecking=yes", "StrictHostKeyChecking=no")
    out = sh(new, argv, warn=True)
    assert out.startswith("255|") and "Permission denied" in out


def test_wrong_pinned_key_makes_the_new_host_refuse(hosts) -> None:
    old, new = hosts["old"], hosts["new"]
    before = sh(old, "cat ~/.ssh/authorized_keys")
    with pytest.raises(RelaunchError, match="not the pinned one; refusing"):
        with transfer.link(old, HostKey.generate().public_line, new):
            pytest.fail("the link must not open")
    assert sh(old, "cat ~/.ssh/authorized_keys") == before
    assert sh(new, "ls /run/relaunch | wc -l") == "0"
