"""relaunch.transfer: the pure parts, and the host-side scripts run here on local files.

The scripts that run on hosts (tree and archive listings, authorized_keys edits, the dump
pull) are stdlib python3 or POSIX shell/bash, so they run here too against a temporary
directory; the sandbox test (tests/sandbox/test_transfer.py) runs them between two Droplets.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from relaunch import transfer
from relaunch.backup.runner import archive_files
from relaunch.errors import RelaunchError
from relaunch.remote import HostKey
from relaunch.transfer import (
    Entry,
    Link,
    authorized_line,
    compare_listings,
    own_addresses,
    parse_rsync_progress,
    parse_rsync_stats,
    rsync_argv,
    rsync_exclude,
)

LINK = Link(address="203.0.113.7", user="root", port=22, directory="/run/relaunch/link-0123abcd", token="relaunch-link-0123abcd")


def f(size: int = 3, mode: int = 0o644, sha: str | None = "a" * 64, uid: int = 0, hardlink: str = "") -> Entry:
    return Entry("f", size, mode, uid, 0, sha, hardlink)


D = Entry("d", 0, 0o755, 0, 0, "", "")


# --------------------------------------------------------------------------- compare_listings


def test_compare_listings_equal_gives_nothing() -> None:
    listing = {".": D, "a": f(), "b": Entry("l", 0, 0o777, 0, 0, "a", "")}
    assert compare_listings(listing, dict(listing)) == []


def test_compare_listings_names_missing_extra_and_each_difference() -> None:
    expected = {".": D, "gone": f(), "x": f(size=10, mode=0o600, uid=33), "ln": Entry("l", 0, 0o777, 0, 0, "t1", "")}
    actual = {".": D, "new": f(), "x": f(size=12, mode=0o644, sha="b" * 64), "ln": Entry("l", 0, 0o777, 0, 0, "t2", "")}
    assert compare_listings(expected, actual) == [
        "missing: gone",
        "differs: ln (target 't1' != 't2')",
        "extra: new",
        "differs: x (size 10 != 12, mode 0600 != 0644, owner 33:0 != 0:0, sha256 aaaaaaaaaaaa != bbbbbbbbbbbb)",
    ]


def test_compare_listings_type_change_is_reported_alone() -> None:
    assert compare_listings({"a": f()}, {"a": D}) == ["differs: a (type f != d)"]


def test_compare_listings_broken_hard_link_is_a_difference() -> None:
    expected = {"a": f(hardlink="a"), "b": f(hardlink="a")}
    actual = {"a": f(), "b": f()}
    assert compare_listings(expected, actual) == [
        "differs: a (hard link: linked with a != not hard-linked)",
        "differs: b (hard link: linked with a != not hard-linked)",
    ]


def test_compare_listings_unhashed_content_is_not_compared() -> None:
    assert compare_listings({"a": f(sha=None)}, {"a": f(sha="c" * 64)}) == []


def test_compare_listings_shows_odd_names_escaped() -> None:
    lines = compare_listings({"a\nb": f(), " lead": f()}, {})
    assert lines == ["missing: ' lead'", "missing: 'a\\nb'"]
    assert all("\n" not in line for line in lines)


def test_compare_listings_stops_at_limit() -> None:
    lines = compare_listings({str(i): f() for i in range(30)}, {}, limit=5)
    assert len(lines) == 6 and lines[-1] == "... and 25 more"


# --------------------------------------------------------------------------- the link's commands


def test_ssh_argv_trusts_only_the_pinned_key_and_ignores_host_config() -> None:
    argv = LINK.ssh_argv()
    opts = {argv[i + 1] for i, a in enumerate(argv) if a == "-o"}
    assert argv[0] == "ssh" and argv[-1] == "root@203.0.113.7"
    assert argv[1:3] == ["-F", "none"]
    assert argv[argv.index("-i") + 1] == "/run/relaunch/link-0123abcd/id"
    assert {
        "StrictHostKeyChecking=yes",
        "BatchMode=yes",
        "UserKnownHostsFile=/run/relaunch/link-0123abcd/known_hosts",
        "GlobalKnownHostsFile=/dev/null",
        f"HostKeyAlias={transfer.HOST_ALIAS}",
        "IdentitiesOnly=yes",
        "ServerAliveInterval=15",
    } <= opts
    assert argv[argv.index("-p") + 1] == "22"


def test_link_remote_quotes_every_value_and_uses_sudo_when_not_root() -> None:
    argv = ["pg_dump", "--dbname", "blog; rm -rf /", "it's"]
    assert shlex.split(LINK.remote(argv)) == argv
    sudoer = Link("old.example", "admin", 2222, LINK.directory, LINK.token)
    assert sudoer.remote(["true"]) == "sudo -n true"
    assert sudoer.command(["true"])[-2:] == ["admin@old.example", "sudo -n true"]
    assert sudoer.ssh_argv()[sudoer.ssh_argv().index("-p") + 1] == "2222"


@pytest.mark.parametrize(
    ("field", "value"),
    [("address", "-oProxyCommand=x"), ("address", "a b"), ("user", "root@x"), ("directory", "/tmp/link-x")],
)
def test_link_refuses_values_that_would_read_as_options(field: str, value: str) -> None:
    values = {"address": "10.0.0.1", "user": "root", "port": 22, "directory": LINK.directory, "token": LINK.token}
    with pytest.raises(RelaunchError):
        Link(**{**values, field: value})


def test_rsync_argv_preserves_everything_and_resumes() -> None:
    argv = rsync_argv(LINK, "/srv/blog/uploads", bwlimit=5000)
    assert argv[:5] == ["rsync", "-aHAX", "--numeric-ids", "--delete", "--partial-dir=.rsync-partial"]
    assert "--bwlimit=5000" in argv and "--modify-window=-1" in argv
    assert argv[-2:] == ["root@203.0.113.7:/srv/blog/uploads/", "/srv/blog/uploads/"]
    # rsync splits -e at spaces (honouring quotes): it must give back exactly the link's options
    assert shlex.split(argv[argv.index("-e") + 1]) == LINK.ssh_options()
    assert not any(a.startswith("--rsync-path") for a in argv)


def test_rsync_argv_leaves_out_the_database_files_inside_the_tree() -> None:
    # SQLite files inside a tree come with their dump: copying them with the tree too moved them twice
    argv = rsync_argv(LINK, "/srv/notes", exclude=["/srv/notes/notes.db", "/srv/notes/notes.db-wal", "/srv/other.db"])
    assert [a for a in argv if a.startswith("--exclude")] == ["--exclude=/notes.db", "--exclude=/notes.db-wal"]
    assert argv[-2:] == ["root@203.0.113.7:/srv/notes/", "/srv/notes/"]
    assert not any(a.startswith("--delete-excluded") for a in argv)  # the new host's copy is left to the restore


def test_rsync_exclude_anchors_each_path_and_escapes_wildcards() -> None:
    assert rsync_exclude("/srv/x/", ["/srv/x/a/b.db", "/srv/xy/c.db", "/srv/x"]) == ["--exclude=/a/b.db"]
    assert rsync_exclude("/srv/x", ["/srv/x/we*ird[1].db"]) == [r"--exclude=/we\*ird\[1].db"]


def test_rsync_argv_brackets_ipv6_and_sudoes_for_a_sudoer() -> None:
    ln = Link("fd00::7", "admin", 22, LINK.directory, LINK.token)
    argv = rsync_argv(ln, "/srv/x")
    assert argv[-2] == "admin@[fd00::7]:/srv/x/"
    assert "--rsync-path=sudo -n rsync" in argv
    assert ln.ssh_argv()[-1] == "admin@fd00::7"


def test_authorized_line_restricts_source_and_everything_else() -> None:
    line = authorized_line("ssh-ed25519 AAAAC3Nz", "relaunch-link-ab", ["10.0.0.5", "fd00::5"])
    assert line == 'from="10.0.0.5,fd00::5",restrict ssh-ed25519 AAAAC3Nz relaunch-link-ab'


@pytest.mark.parametrize("sources", [[], ['10.0.0.5",command="sh'], ["a b"]])
def test_authorized_line_refuses_no_or_odd_sources(sources: list[str]) -> None:
    with pytest.raises(RelaunchError):
        authorized_line("ssh-ed25519 AAAA", "t", sources)


def test_own_addresses_skips_virtual_interfaces() -> None:
    out = """\
2: eth0    inet 172.20.0.3/16 brd 172.20.255.255 scope global eth0\\       valid_lft forever preferred_lft forever
2: eth0    inet6 fd5e:1::3/64 scope global nodad \\       valid_lft forever preferred_lft forever
3: docker0    inet 172.17.0.1/16 brd 172.17.255.255 scope global docker0\\       valid_lft forever
4: br-1a2b    inet 172.18.0.1/16 scope global br-1a2b\\       valid_lft forever
5: eth1@if9    inet 10.110.0.2/20 scope global eth1\\       valid_lft forever
"""
    assert own_addresses(out) == ["172.20.0.3", "10.110.0.2", "fd5e:1::3"]


def test_pins_refuses_a_non_key() -> None:
    with pytest.raises(RelaunchError, match="not an SSH public key"):
        transfer._pins("not a key")
    key = HostKey.generate()
    assert transfer._pins(key.public_line + " comment\n") == [f"{transfer.HOST_ALIAS} {key.public_line}"]


# --------------------------------------------------------------------------- rsync output


def test_parse_rsync_stats() -> None:
    text = """
Number of files: 5 (reg: 3, dir: 2)
Number of regular files transferred: 1
Total file size: 52428810 bytes
Literal data: 31457280 bytes
Matched data: 20971520 bytes
"""
    assert parse_rsync_stats(text) == {
        "files": 3, "bytes": 52428810, "transferred": 1, "literal": 31457280, "matched": 20971520,
    }  # fmt: skip
    assert parse_rsync_stats("")["files"] == 0


def test_parse_rsync_progress() -> None:
    assert parse_rsync_progress("     3000000 100%  943.26MB/s    0:00:00 (xfr#1, to-chk=0/2)") == (3000000, 3000000)
    assert parse_rsync_progress("          32768   1%    0.00kB/s    0:00:00  ") == (32768, 3276800)
    assert parse_rsync_progress("   1,000  50%  1kB/s 0:00:00 (xfr#1, ir-chk=10/20)") == (1000, None)
    assert parse_rsync_progress("Number of files: 2") is None
    assert parse_rsync_progress("relaunch-alive") is None


# --------------------------------------------------------------------------- the host-side listing scripts, here


def run_script(script: str, *args: str) -> list[list]:
    out = subprocess.run(["python3", "-", *args], input=script.encode(), capture_output=True, check=True).stdout
    conn = SimpleNamespace(host="local")
    return transfer._json_rows(conn, out, "test")  # type: ignore[arg-type]


def local_tree(root: Path, exclude: tuple[str, ...] = (), sample: int = -1) -> transfer.Listing:
    return transfer._listing(run_script(transfer._TREE_LISTING, str(root), str(sample), *exclude))


def local_archive(archive: Path, paths: list[str]) -> dict[str, transfer.Listing]:
    rows = run_script(transfer._ARCHIVE_LISTING, str(archive), *paths)
    return transfer.archive_listings_from_rows(rows, paths, str(archive))


def odd_tree(root: Path) -> Path:
    """A tree with names that break naive tools, a symlink, hard links, modes, owners and a non-UTF-8 name."""
    tree = root / "srv" / "app" / "data"
    (tree / "sub dir").mkdir(parents=True)
    (tree / "plain.txt").write_text("hello\n")
    (tree / "with space.txt").write_text("space\n")
    (tree / "new\nline").write_text("newline\n")
    (tree / "-leading-dash").write_text("dash\n")
    (tree / "café ünïcode ✓").write_text("unicode\n")
    (tree / os.fsdecode(b"latin1-\xe9")).write_text("not utf-8\n")
    (tree / "sub dir" / "secret").write_text("0600\n")
    (tree / "sub dir" / "secret").chmod(0o600)
    (tree / "sub dir").chmod(0o750)
    (tree / "link-to-plain").symlink_to("plain.txt")
    os.link(tree / "plain.txt", tree / "sub dir" / "hard")
    if os.geteuid() == 0:
        os.chown(tree / "with space.txt", 33, 33)
    return tree


def test_tree_listing_script_lists_everything_with_hashes_links_and_modes(tmp_path: Path) -> None:
    tree = odd_tree(tmp_path)
    listing = local_tree(tree)
    assert listing["."].type == "d"
    mode = (tree / "plain.txt").stat().st_mode & 0o7777
    assert listing["plain.txt"] == Entry("f", 6, mode, os.geteuid(), os.getegid(),
                                         hashlib.sha256(b"hello\n").hexdigest(), "plain.txt")
    assert listing["sub dir/hard"].hardlink == "plain.txt"
    assert listing["with space.txt"].hardlink == ""
    assert listing["link-to-plain"][:1] == ("l",) and listing["link-to-plain"].content == "plain.txt"
    assert listing["sub dir/secret"].mode == 0o600 and listing["sub dir"].mode == 0o750
    assert {"new\nline", "-leading-dash", "café ünïcode ✓", os.fsdecode(b"latin1-\xe9")} <= listing.keys()
    if os.geteuid() == 0:
        assert listing["with space.txt"][3:5] == (33, 33)
    (tree / "plain.txt").write_text("HELLO\n")
    old, new = hashlib.sha256(b"hello\n").hexdigest()[:12], hashlib.sha256(b"HELLO\n").hexdigest()[:12]
    assert compare_listings(listing, local_tree(tree)) == [
        f"differs: plain.txt (sha256 {old} != {new})",
        f"differs: sub dir/hard (sha256 {old} != {new})",
    ]


def test_tree_listing_script_sample_hashes_the_same_files_everywhere(tmp_path: Path) -> None:
    for side in ("a", "b"):
        for i in range(20):
            (tmp_path / side).mkdir(exist_ok=True)
            (tmp_path / side / f"f{i}").write_text(str(i))
    a, b = local_tree(tmp_path / "a", sample=5), local_tree(tmp_path / "b", sample=5)
    hashed = {p for p, e in a.items() if e.type == "f" and e.content is not None}
    assert len(hashed) == 5
    assert hashed == {p for p, e in b.items() if e.type == "f" and e.content is not None}


def test_tree_listing_script_leaves_excluded_paths_out(tmp_path: Path) -> None:
    tree = odd_tree(tmp_path)
    listing = local_tree(tree, exclude=(str(tree / "plain.txt"),))
    assert "plain.txt" not in listing and "with space.txt" in listing
    assert listing["sub dir/hard"].hardlink == ""  # its only partner in the tree is left out


def test_archive_listing_of_a_backup_archive_matches_the_tree(tmp_path: Path) -> None:
    tree = odd_tree(tmp_path)
    (tree / "link-to-plain").unlink()  # see the xfail below: symlinks to directories; file symlinks are kept
    (tree / "link-to-plain").symlink_to("plain.txt")
    db = tree / "notes.db"
    db.write_text("dumped on its own")
    other = tmp_path / "srv" / "app" / "conf"
    other.mkdir()
    (other / "app.ini").write_text("[x]\n")
    archive = tmp_path / "files.tar.gz"
    archive_files({"app": "app", "paths": [str(tree), str(other)], "exclude": [str(db)]}, archive)
    listings = local_archive(archive, [str(tree), str(other)])
    assert compare_listings(local_tree(tree, exclude=(str(db),)), listings[str(tree)]) == []
    assert compare_listings(local_tree(other), listings[str(other)]) == []
    assert listings[str(tree)]["sub dir/hard"].hardlink == "plain.txt"
    # and a restored tree that lost a file or a mode is caught
    (tree / "sub dir" / "secret").chmod(0o644)
    (tree / "-leading-dash").unlink()
    assert compare_listings(listings[str(tree)], local_tree(tree, exclude=(str(db),))) == [
        "missing: -leading-dash",
        "differs: sub dir/secret (mode 0600 != 0644)",
    ]


def test_archive_listing_refuses_a_tree_not_in_the_archive(tmp_path: Path) -> None:
    tree = odd_tree(tmp_path)
    archive = tmp_path / "files.tar.gz"
    archive_files({"app": "app", "paths": [str(tree)]}, archive)
    with pytest.raises(RelaunchError, match="/srv/other is not in the archive"):
        local_archive(archive, [str(tree), "/srv/other"])


def test_backup_archive_keeps_a_symlink_to_a_directory(tmp_path: Path) -> None:
    tree = odd_tree(tmp_path)
    (tree / "link-to-dir").symlink_to("sub dir")
    archive = tmp_path / "files.tar.gz"
    archive_files({"app": "app", "paths": [str(tree)]}, archive)
    assert compare_listings(local_tree(tree), local_archive(archive, [str(tree)])[str(tree)]) == []


# --------------------------------------------------------------------------- the pull script, here


def run_pull(tmp_path: Path, producer: list[str], mode: str = "file", restore: tuple[str, ...] = ()):
    target = tmp_path / "out.dump"
    linkdir = tmp_path / "link"
    linkdir.mkdir(exist_ok=True)
    argv = ["bash", "-c", transfer._PULL, "pull", mode, str(target), str(linkdir), transfer._RELAY,
            str(len(producer)), *producer, *restore]
    done = subprocess.run(argv, capture_output=True, text=True)
    lines = dict(line.split(" ", 1) for line in done.stdout.splitlines() if line.startswith("relaunch-"))
    return done, lines, target


def test_pull_script_lands_the_file_whole_with_its_hash(tmp_path: Path) -> None:
    payload = os.urandom(3_000_000)
    (tmp_path / "src.bin").write_bytes(payload)
    done, lines, target = run_pull(tmp_path, ["cat", str(tmp_path / "src.bin")])
    assert done.returncode == 0, done.stderr
    assert lines["relaunch-status"] == "0 0 0"
    assert lines["relaunch-relay"] == f"{len(payload)} {hashlib.sha256(payload).hexdigest()}"
    assert target.read_bytes() == payload and (target.stat().st_mode & 0o777) == 0o600
    assert not (tmp_path / "out.dump.part").exists()
    assert list((tmp_path / "link").iterdir()) == []  # its work directory is gone


def test_pull_script_failed_dump_leaves_no_file_and_says_which_side(tmp_path: Path) -> None:
    done, lines, target = run_pull(tmp_path, ["sh", "-c", "echo partial; echo 'pg_dump: no such database' >&2; exit 3"])
    assert done.returncode == 1
    assert lines["relaunch-status"] == "3 0 0"
    assert transfer._sides(done.stderr)["src"] == "pg_dump: no such database"
    assert not target.exists() and not (tmp_path / "out.dump.part").exists()


def test_pull_script_into_a_restore_reports_each_side(tmp_path: Path) -> None:
    sink = tmp_path / "restored"
    done, lines, _ = run_pull(tmp_path, ["printf", "abc"], "pipe", ("sh", "-c", f"cat > {shlex.quote(str(sink))}"))
    assert done.returncode == 0 and sink.read_text() == "abc"
    assert lines["relaunch-relay"] == f"3 {hashlib.sha256(b'abc').hexdigest()}"
    done, lines, _ = run_pull(tmp_path, ["printf", "abc"], "pipe", ("sh", "-c", "cat >/dev/null; echo 'ERROR: relation' >&2; exit 2"))
    assert done.returncode == 1 and lines["relaunch-status"] == "0 0 2"
    assert transfer._sides(done.stderr)["dst"] == "ERROR: relation"


# --------------------------------------------------------------------------- authorized_keys edits, here


def test_authorize_and_revoke_scripts_touch_only_their_own_line(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    keys = home / ".ssh" / "authorized_keys"
    keys.write_text("ssh-ed25519 AAAAother operator")  # no final newline: the new line must not join it
    keys.chmod(0o600)
    env = {**os.environ, "HOME": str(home)}
    line = authorized_line("ssh-ed25519 AAAAlink", "relaunch-link-feed", ["10.0.0.5"])
    subprocess.run(["sh", "-c", transfer._AUTHORIZE, "sh", line, "3600"], env=env, check=True, capture_output=True)
    lines = keys.read_text().splitlines()
    assert lines[0] == "ssh-ed25519 AAAAother operator"
    assert lines[1].startswith('expiry-time="') and lines[1].endswith(line)
    out = subprocess.run(["python3", "-", "relaunch-link-feed"], input=transfer._REVOKE.encode(), env=env,
                         check=True, capture_output=True).stdout.decode()
    assert out.strip() == "relaunch-revoked 1"
    assert keys.read_text() == "ssh-ed25519 AAAAother operator\n"  # only the line end the link needed stays
    assert keys.stat().st_mode & 0o777 == 0o600
    out = subprocess.run(["python3", "-", "relaunch-link-feed"], input=transfer._REVOKE.encode(), env=env,
                         check=True, capture_output=True).stdout.decode()
    assert out.strip() == "relaunch-revoked 0"


# --------------------------------------------------------------------------- link(): clean-up in every case


@pytest.fixture
def fake_hosts(monkeypatch: pytest.MonkeyPatch):
    calls: list[str] = []
    fail: dict[str, BaseException] = {}

    def step(name: str):
        def run(*args, **kwargs):
            calls.append(name)
            if name in fail:
                raise fail[name]
            return ["10.0.0.9"] if name == "addresses" else 0
        return run

    for name, attr in [("make", "_make_dir"), ("addresses", "_new_host_addresses"), ("authorize", "_authorize"),
                       ("probe", "_probe"), ("revoke", "_revoke"), ("close", "_close_dir")]:
        monkeypatch.setattr(transfer, attr, step(name))
    src = SimpleNamespace(host="old", user="root", port=22)
    dst = SimpleNamespace(host="new", user="root", port=22)
    return SimpleNamespace(calls=calls, fail=fail, src=src, dst=dst, key=HostKey.generate().public_line)


def test_link_undoes_on_leaving_key_first(fake_hosts) -> None:
    with transfer.link(fake_hosts.src, fake_hosts.key, fake_hosts.dst) as ln:
        assert ln.directory.startswith("/run/relaunch/link-") and ln.token.endswith(ln.directory.rsplit("-", 1)[1])
    assert fake_hosts.calls == ["make", "addresses", "authorize", "probe", "revoke", "close"]


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()])
def test_link_undoes_when_the_block_fails_or_is_interrupted(fake_hosts, exc: BaseException) -> None:
    with pytest.raises(type(exc)):
        with transfer.link(fake_hosts.src, fake_hosts.key, fake_hosts.dst):
            raise exc
    assert fake_hosts.calls[-2:] == ["revoke", "close"]


@pytest.mark.parametrize("failing", ["make", "addresses", "authorize", "probe"])
def test_link_undoes_what_was_done_when_setting_up_fails(fake_hosts, failing: str) -> None:
    fake_hosts.fail[failing] = RelaunchError(f"{failing} failed")
    with pytest.raises(RelaunchError, match=f"{failing} failed"):
        with transfer.link(fake_hosts.src, fake_hosts.key, fake_hosts.dst):
            pytest.fail("the block must not run")
    done = fake_hosts.calls[: fake_hosts.calls.index(failing) + 1]
    undone = fake_hosts.calls[len(done):]
    # the key line is removed whenever adding it was attempted (it may be there though the call failed)
    assert undone == (["revoke", "close"] if "authorize" in done else ["close"])


def test_link_clean_up_failure_is_raised_naming_what_is_left(fake_hosts) -> None:
    fake_hosts.fail["revoke"] = RelaunchError("old host gone")
    with pytest.raises(RelaunchError, match=r"(?s)not fully removed.*relaunch-link-[0-9a-f]+.*old host gone"):
        with transfer.link(fake_hosts.src, fake_hosts.key, fake_hosts.dst):
            pass
    assert fake_hosts.calls[-1] == "close"  # the other step still ran


def test_link_clean_up_goes_on_through_ctrl_c(fake_hosts) -> None:
    fake_hosts.fail["revoke"] = KeyboardInterrupt()
    with pytest.raises(KeyboardInterrupt):
        with transfer.link(fake_hosts.src, fake_hosts.key, fake_hosts.dst):
            pass
    assert fake_hosts.calls[-1] == "close"


def test_link_refuses_a_missing_pinned_key(fake_hosts) -> None:
    with pytest.raises(RelaunchError, match="no pinned host key"):
        with transfer.link(fake_hosts.src, "", fake_hosts.dst):
            pass
    assert fake_hosts.calls == []


def test_listing_rows_json_roundtrip_keeps_non_utf8_names() -> None:
    name = os.fsdecode(b"x\xff")
    rows = transfer._json_rows(SimpleNamespace(host="h"), (json.dumps([name, "d", 0, 0o755, 0, 0, "", None]) + "\nrelaunch-done 1\n").encode(), "t")  # type: ignore[arg-type]
    assert rows[0][0] == name
