"""The drift comparison on manifests built here: one finding per change made by hand, known noise left out."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from relaunch.drift.compare import DEFAULT_IGNORE, KINDS, compare, matches


def manifest() -> dict[str, Any]:
    """A small rebuilt host: what a reference looks like."""
    return {
        "format": 1, "hostname": "example-drill-1", "collected_at": "2026-11-27T12:00:00Z",
        "packages": {"nginx": {"version": "1.22", "manual": True}, "libc6": {"version": "2.36", "manual": False},
                     "docker.io": {"version": "20.10", "manual": True}},
        "etc": {
            "/etc/nginx/nginx.conf": {"type": "file", "sha256": "a" * 64, "mode": "0o644", "secret": False,
                                      "package": "nginx"},
            "/etc/hostname": {"type": "file", "sha256": "b" * 64, "mode": "0o644", "secret": False, "package": None},
            "/etc/ssh/ssh_host_ed25519_key": {"type": "file", "sha256": None, "mode": "0o600", "secret": True,
                                              "package": None},
            "/etc/relaunch/blog.env": {"type": "file", "sha256": None, "mode": "0o600", "secret": True, "package": None},
            "/etc/nginx/sites-enabled/relaunch-blog.conf": {"type": "link", "target": "../sites-available/x",
                                                            "mode": "0o777", "package": None},
        },
        "units": {
            "nginx.service": {"state": "enabled", "active": "active", "path": "/lib/systemd/system/nginx.service",
                              "sha256": "c" * 64, "dropins": {}, "triggers": [], "package": "nginx"},
            "stats.service": {"state": "enabled", "active": "active", "path": "/etc/systemd/system/stats.service",
                              "sha256": "d" * 64, "dropins": {}, "triggers": [], "package": None},
        },
        "cron": [{"source": "/etc/cron.d/e2scrub_all", "entry": "30 3 * * 0 root e2scrub_all", "package": "e2fsprogs"}],
        "ports": [
            {"proto": "tcp", "address": "0.0.0.0", "port": 22, "process": "sshd", "exe": "/usr/sbin/sshd", "package": "openssh-server"},
            {"proto": "tcp", "address": "10.0.0.2", "port": 80, "process": "nginx", "exe": "/usr/sbin/nginx", "package": "nginx"},
            {"proto": "tcp", "address": "127.0.0.1", "port": 41234, "process": "containerd", "exe": "/usr/bin/containerd", "package": "containerd"},
        ],
        "containers": {
            "blog_web_1": {"image": "reg/example/blog@sha256:1", "image_id": "sha256:i1", "digests": ["reg/example/blog@sha256:1"],
                           "project": "blog", "service": "web", "running": True, "env": {}, "env_names": [], "mounts": []},
        },
        "images": {"sha256:i1": {"tags": [], "digests": ["reg/example/blog@sha256:1"]}},
        "volumes": ["blog_pgdata", "f" * 64],
        "projects": {"blog": {"working_dir": "/srv/blog", "config_files": "/srv/blog/compose.yml", "containers": ["blog_web_1"]}},
        "databases": [{"server": "native mariadb", "engine": "mariadb", "name": "stats"},
                      {"server": "native mariadb", "engine": "mariadb", "name": "mysql"}],
        "users": {"root": {"uid": 0, "shell": "/bin/bash", "home": "/root", "keys": ["ssh-ed25519 SHA256:abc relaunch"]}},
        "server_names": [{"name": "example.test", "file": "/etc/nginx/sites-enabled/relaunch-blog.conf"}],
        "trees": {"/srv/blog": {"compose.yml": {"type": "file", "sha256": "e" * 64, "mode": "0o644", "size": 10}}},
        "errors": [],
    }


def production(ref: dict[str, Any]) -> dict[str, Any]:
    """The same host as production sees it: another name, address, host key and anonymous volume (no drift)."""
    prod = copy.deepcopy(ref)
    prod["hostname"] = "example-prod"
    prod["etc"]["/etc/hostname"]["sha256"] = "9" * 64
    prod["ports"][1]["address"] = "10.0.0.1"
    prod["ports"][2]["port"] = 38911  # an ephemeral port is another one on every host
    prod["volumes"] = ["blog_pgdata", "0" * 64]
    return prod


def keys(result) -> set[str]:
    return {f.key for f in result.findings}


def test_compare_reports_nothing_between_two_hosts_built_alike() -> None:
    ref = manifest()
    result = compare(production(ref), ref)
    assert result.findings == [] and not result.drifted
    assert "etc:/etc/hostname" in result.ignored


def test_compare_folds_what_a_hand_installed_package_brought_into_one_finding() -> None:
    ref = manifest()
    prod = production(ref)
    prod["packages"]["cron"] = {"version": "3.0", "manual": True}
    prod["packages"]["cron-daemon-common"] = {"version": "3.0", "manual": False}
    prod["etc"]["/etc/default/cron"] = {"type": "file", "sha256": "1" * 64, "mode": "0o644", "secret": False,
                                        "package": "cron"}
    prod["units"]["cron.service"] = {"state": "enabled", "active": "active", "path": "/lib/systemd/system/cron.service",
                                     "sha256": "2" * 64, "dropins": {}, "triggers": [], "package": "cron"}
    prod["cron"].append({"source": "/etc/cron.d/popularity", "entry": "1 2 * * * root true", "package": "cron-daemon-common"})
    result = compare(prod, ref)
    assert keys(result) == {"package:cron"}
    (finding,) = result.findings
    assert set(finding.related) >= {"package cron-daemon-common (installed as a dependency)", "etc /etc/default/cron",
                                    "unit cron.service"}
    assert result.folded == 4


def test_compare_folds_what_maintainer_scripts_wrote_by_link_target_and_time() -> None:
    """Files dpkg does not list: alternatives and rc links by what they point to, others by when they were made."""
    ref = manifest()
    prod = production(ref)
    prod["packages"]["exim4"] = {"version": "4.96", "manual": True, "installed_at": 1_000_000}
    prod["etc"]["/etc/alternatives/mailx"] = {"type": "link", "target": "/usr/bin/bsd-mailx", "mode": "0o777",
                                              "package": None, "target_package": "exim4", "changed": 1_000_030}
    prod["etc"]["/etc/aliases"] = {"type": "file", "sha256": "1" * 64, "mode": "0o644", "secret": False,
                                   "package": None, "changed": 1_000_040}
    prod["etc"]["/etc/later.conf"] = {"type": "file", "sha256": "2" * 64, "mode": "0o644", "secret": False,
                                      "package": None, "changed": 1_000_000 + 3600}  # an hour later: by hand
    result = compare(prod, ref)
    assert keys(result) == {"package:exim4", "etc:/etc/later.conf"}
    assert set(result.findings[0].related) == {"etc /etc/alternatives/mailx",
                                               "etc /etc/aliases (written while it was installed)"}


def test_compare_dependencies_alone_are_one_finding() -> None:
    ref = manifest()
    prod = production(ref)
    prod["packages"]["libfoo1"] = {"version": "1", "manual": False}
    prod["packages"]["libbar2"] = {"version": "1", "manual": False}
    assert keys(compare(prod, ref)) == {"package:(dependencies)"}


def test_compare_etc_edited_unowned_and_secret_files() -> None:
    ref = manifest()
    prod = production(ref)
    prod["etc"]["/etc/nginx/nginx.conf"]["sha256"] = "7" * 64
    prod["etc"]["/etc/myapp.conf"] = {"type": "file", "sha256": "8" * 64, "mode": "0o644", "secret": False, "package": None}
    prod["etc"]["/etc/myapp.secret"] = {"type": "file", "sha256": None, "mode": "0o600", "secret": True, "package": None}
    # a secret file is compared by presence only: another value on production is no drift
    prod["etc"]["/etc/relaunch/blog.env"]["mode"] = "0o600"
    result = compare(prod, ref)
    assert keys(result) == {"etc:/etc/nginx/nginx.conf", "etc:/etc/myapp.conf", "etc:/etc/myapp.secret"}
    by = {f.subject: f for f in result.findings}
    assert by["/etc/nginx/nginx.conf"].change == "differs" and "nginx" in by["/etc/nginx/nginx.conf"].detail
    assert "belongs to no package" in by["/etc/myapp.conf"].detail


def test_compare_leaves_out_host_identity_by_default() -> None:
    ref = manifest()
    prod = production(ref)
    prod["etc"]["/etc/machine-id"] = {"type": "file", "sha256": "3" * 64, "mode": "0o444", "secret": False, "package": None}
    prod["etc"]["/etc/ssh/ssh_host_ed25519_key.pub"] = {"type": "file", "sha256": "4" * 64, "mode": "0o644",
                                                         "secret": False, "package": None}
    prod["units"]["relaunch-backup.timer"] = {"state": "enabled", "active": "active",
                                              "path": "/etc/systemd/system/relaunch-backup.timer", "sha256": "5" * 64,
                                              "dropins": {}, "triggers": ["relaunch-backup.service"], "package": None}
    prod["databases"].append({"server": "native mariadb", "engine": "mariadb", "name": "stats_relaunch_fp"})
    prod["trees"]["/srv/blog"]["__pycache__/app.cpython-311.pyc"] = {"type": "file", "sha256": "6" * 64, "mode": "0o644"}
    result = compare(prod, ref)
    assert result.findings == []
    assert {"etc:/etc/machine-id", "unit:relaunch-backup.timer", "database:native mariadb/stats_relaunch_fp"} <= set(result.ignored)


def test_compare_a_timer_takes_its_service_along() -> None:
    ref = manifest()
    prod = production(ref)
    prod["units"]["hand.timer"] = {"state": "enabled", "active": "active", "path": "/etc/systemd/system/hand.timer",
                                   "sha256": "1" * 64, "dropins": {}, "triggers": ["hand.service"], "package": None}
    prod["units"]["hand.service"] = {"state": "static", "active": "active", "path": "/etc/systemd/system/hand.service",
                                     "sha256": "2" * 64, "dropins": {}, "triggers": [], "package": None}
    prod["etc"]["/etc/systemd/system/hand.timer"] = {"type": "file", "sha256": "1" * 64, "mode": "0o644",
                                                     "secret": False, "package": None}
    result = compare(prod, ref)
    assert keys(result) == {"unit:hand.timer"}
    assert result.findings[0].related == ["unit hand.service"]


def test_compare_an_edited_unit_of_the_inventory_differs() -> None:
    ref = manifest()
    prod = production(ref)
    prod["units"]["stats.service"]["dropins"] = {"/etc/systemd/system/stats.service.d/override.conf": "1" * 64}
    result = compare(prod, ref)
    assert keys(result) == {"unit:stats.service"} and result.findings[0].change == "differs"


def test_compare_cron_ports_users_and_server_names() -> None:
    ref = manifest()
    prod = production(ref)
    prod["cron"].append({"source": "/var/spool/cron/crontabs/root", "entry": "17 3 * * * /usr/local/bin/report",
                         "package": None})
    prod["ports"].append({"proto": "tcp", "address": "0.0.0.0", "port": 9100, "process": "node_exporter",
                          "exe": "/usr/local/bin/node_exporter", "package": None})
    prod["ports"].append({"proto": "udp", "address": "0.0.0.0", "port": 45000, "process": "dhclient", "exe": None,
                          "package": None})  # a client's socket
    prod["users"]["deploy"] = {"uid": 1000, "shell": "/bin/bash", "home": "/home/deploy", "keys": []}
    prod["users"]["root"]["keys"].append("ssh-ed25519 SHA256:xyz laptop")
    prod["server_names"].append({"name": "old.example.test", "file": "/etc/nginx/sites-enabled/old"})
    prod["etc"]["/etc/nginx/sites-available/old"] = {"type": "file", "sha256": "1" * 64, "mode": "0o644",
                                                     "secret": False, "package": None}
    result = compare(prod, ref)
    assert keys(result) == {"cron:/var/spool/cron/crontabs/root: 17 3 * * * /usr/local/bin/report",
                            "port:tcp 0.0.0.0:9100", "user:deploy", "user:root", "server_name:old.example.test"}
    by = {f.key: f for f in result.findings}
    assert "SHA256:xyz" in by["user:root"].detail
    assert by["server_name:old.example.test"].related == ["etc /etc/nginx/sites-available/old"]


def test_compare_containers_images_volumes_and_projects() -> None:
    ref = manifest()
    prod = production(ref)
    prod["containers"]["hand-extra"] = {"image": "busybox", "image_id": "sha256:i2", "digests": [], "project": None,
                                        "running": True, "env": {}, "env_names": ["DB_PASSWORD"], "mounts": []}
    prod["containers"]["blog_web_1"]["digests"] = ["reg/example/blog@sha256:9"]
    prod["containers"]["blog_web_1"]["image_id"] = "sha256:i9"
    prod["containers"]["wiki_app_1"] = {"image": "wiki", "image_id": "sha256:i3", "digests": [], "project": "wiki",
                                        "running": True, "env": {}, "env_names": [], "mounts": []}
    prod["projects"]["wiki"] = {"working_dir": "/opt/wiki", "config_files": "/opt/wiki/docker-compose.yml",
                                "containers": ["wiki_app_1"]}
    prod["volumes"] += ["wiki_data", "loose"]
    prod["images"]["sha256:i4"] = {"tags": ["old/thing:1"], "digests": []}
    result = compare(prod, ref)
    assert keys(result) == {"container:hand-extra", "container:blog_web_1", "project:wiki", "volume:loose",
                            "image:old/thing:1"}
    by = {f.key: f for f in result.findings}
    assert by["container:blog_web_1"].change == "differs"
    assert set(by["project:wiki"].related) == {"container wiki_app_1", "volume wiki_data"}


def test_compare_databases_the_inventory_does_not_name() -> None:
    ref = manifest()
    prod = production(ref)
    prod["databases"].append({"server": "native mariadb", "engine": "mariadb", "name": "handmade"})
    prod["databases"].append({"server": "native mariadb", "engine": "mariadb", "name": "performance_schema"})
    result = compare(prod, ref)
    assert keys(result) == {"database:native mariadb/handmade"}
    assert "not backed up" in result.findings[0].detail


def test_compare_app_trees_one_finding_per_new_file_or_directory() -> None:
    ref = manifest()
    prod = production(ref)
    tree = prod["trees"]["/srv/blog"]
    tree["notes.txt"] = {"type": "file", "sha256": "1" * 64, "mode": "0o644", "size": 3}
    tree["extra/a/b.txt"] = {"type": "file", "sha256": "2" * 64, "mode": "0o644", "size": 3}
    tree["extra/c.txt"] = {"type": "file", "sha256": "3" * 64, "mode": "0o644", "size": 3}
    tree["compose.yml"]["sha256"] = "4" * 64
    tree["app.log"] = {"type": "file", "sha256": "5" * 64, "mode": "0o644", "size": 3}
    result = compare(prod, ref)
    assert keys(result) == {"file:/srv/blog/notes.txt", "file:/srv/blog/extra", "file:/srv/blog/compose.yml"}
    by = {f.key: f for f in result.findings}
    assert by["file:/srv/blog/extra"].data["files"] == 2
    assert by["file:/srv/blog/compose.yml"].change == "differs"


def test_compare_the_inventory_ignore_list_extends_the_defaults() -> None:
    ref = manifest()
    prod = production(ref)
    prod["etc"]["/etc/myapp/cache/x"] = {"type": "file", "sha256": "1" * 64, "mode": "0o644", "secret": False, "package": None}
    prod["trees"]["/srv/blog"]["old.bak"] = {"type": "file", "sha256": "1" * 64, "mode": "0o644"}
    prod["units"]["certbot.timer"] = {"state": "enabled", "active": "active", "path": "/etc/systemd/system/certbot.timer",
                                      "sha256": "1" * 64, "dropins": {}, "triggers": [], "package": None}
    assert len(compare(prod, ref).findings) == 3
    result = compare(prod, ref, ignore=["etc:/etc/myapp/cache/*", "*.bak", "unit:certbot.*"])
    assert result.findings == []


def test_matches_kind_patterns_and_bare_globs() -> None:
    assert matches(["etc:/etc/x*"], "etc", "/etc/x/y")
    assert not matches(["etc:/etc/x*"], "file", "/etc/x/y")
    assert matches(["/srv/*.bak"], "file", "/srv/blog/a.bak")
    assert all(p.split(":", 1)[0] in KINDS for p, _ in DEFAULT_IGNORE)


@pytest.mark.parametrize("pattern", ["nosuchkind:/x", "etc:", " "])
def test_inventory_refuses_a_bad_ignore_pattern(pattern: str) -> None:
    from pydantic import ValidationError

    from relaunch.inventory.model import Drift

    with pytest.raises(ValidationError, match="KIND:GLOB"):
        Drift(ignore=[pattern])
    assert Drift(ignore=["etc:/etc/x/*", "*.bak"], fail_drill=True).fail_drill
