"""Runbooks on a real sandbox Droplet: rendered user-data boots it, steps run over pinned SSH, twice.

One Droplet, booted from relaunch's own cloud-init template; a small synthetic runbook
(plus the generic ``relaunch-dirs`` step) runs twice: the first run changes the host, the
second changes nothing. A failing step stops the run and is named with its place.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from relaunch.bootstrap import wait_for_cloud_init
from relaunch.cloud import Cloud
from relaunch.inventory.loader import load_site
from relaunch.inventory.model import Inventory
from relaunch.inventory.secrets import ensure_sandbox_secrets, resolve_all
from relaunch.remote import HostKey
from relaunch.render import TEMPLATES_DIR, RenderContext, preview_images, render_host
from relaunch.runbooks import RunbookError, load_steps, run_steps
from relaunch.upload import upload
from tests.conftest import boot_rendered

pytestmark = pytest.mark.sandbox

EXAMPLE = Path(__file__).resolve().parents[2] / "inventory" / "example.yml"

SYNTHETIC = {
    "00-dirs.md": """# Directories

Made once; a second run finds them.

```sh {step=make-dir}
if [ ! -d /srv/relaunch-test ]; then
  install -d -m 0755 /srv/relaunch-test
  echo "relaunch: changed"
fi
```

```sh
echo "documentation only: never run"; touch /srv/relaunch-test/doc-block-ran
```
""",
    "10-config.md": """# Config from the inventory

~~~bash {step=write-config}
want={{ inventory.site }}:{{ inventory.apps[0].port }}
if [ "$(cat /srv/relaunch-test/conf 2>/dev/null)" != "$want" ]; then
  echo "$want" > /srv/relaunch-test/conf
  echo "relaunch: changed"
fi
~~~

```sh {step=stdin-is-not-the-script}
# a command that reads stdin gets nothing, not the rest of this script
cat > /srv/relaunch-test/stdin-seen
[ ! -s /srv/relaunch-test/stdin-seen ]
echo still-running
```
""",
}

FAILING = {
    "00-ok.md": "```sh {step=fine}\necho fine\n```\n",
    "10-bad.md": "# Bad\n\n```sh {step=boom}\necho before-the-failure\nls /no/such/dir\necho never\n```\n"
                 "```sh {step=after}\ntouch /srv/relaunch-test/after-ran\n```\n",
}


def write_books(directory: Path, books: dict[str, str]) -> Path:
    directory.mkdir()
    for name, text in books.items():
        (directory / name).write_text(text)
    return directory


def test_runbook_runs_twice_without_changes_and_stops_at_a_failing_step(
    cloud: Cloud, client_key: tuple[Path, str], tmp_path: Path
) -> None:
    inv = Inventory.model_validate(yaml.safe_load(EXAMPLE.read_text()))
    host_key = HostKey.generate()
    ctx = RenderContext(inventory=inv, sandbox=True, host_key=host_key, hostname="runbook-test")
    conn = boot_rendered(cloud, client_key, ctx, "runbook-test")
    try:

        generic = [s for s in load_steps(ctx) if s.name == "relaunch-dirs"]
        steps = load_steps(ctx, write_books(tmp_path / "books", SYNTHETIC)) + generic
        first = run_steps(conn, steps)
        assert first.changed == ["make-dir", "write-config", "relaunch-dirs"]
        assert "still-running" in first.steps[2].output
        second = run_steps(conn, steps)
        assert second.changed == []
        assert [r.step.name for r in second.steps] == [s.name for s in steps]
        check = "cat /srv/relaunch-test/conf; test ! -e /srv/relaunch-test/doc-block-ran; stat -c %a /etc/relaunch/secrets"
        assert conn.run(check, hide=True, in_stream=False).stdout.split() == ["example:8081", "700"]

        failing = load_steps(ctx, write_books(tmp_path / "failing", FAILING))
        with pytest.raises(RunbookError) as info:
            run_steps(conn, failing)
        message = str(info.value)
        assert "step boom (10-bad.md:3) failed" in message
        assert "before-the-failure" in message and "/no/such/dir" in message and "never" not in message
        assert conn.run("test -e /srv/relaunch-test/after-ran", hide=True, warn=True, in_stream=False).failed

        # relaunch's own user-data did its job on cloud-init 22.4
        out = conn.run(
            "cloud-init status --wait >/dev/null; cloud-init status; hostname; readlink -f /etc/localtime",
            hide=True, warn=True, in_stream=False, timeout=300,
        ).stdout.split("\n")
        assert out[:3] == ["status: done", "runbook-test", "/usr/share/zoneinfo/Etc/UTC"]
    finally:
        conn.close()


#: A native app that answers on its port at once, and one that runs a while without ever answering, then stops.
ANSWERS = ("[Unit]\nDescription=probe {{ app.name }}\n[Service]\n"
           "ExecStart=/usr/bin/python3 -m http.server {{ app.port }} --bind 127.0.0.1\n"
           "[Install]\nWantedBy=multi-user.target\n")
SILENT = ("[Unit]\nDescription=silent {{ app.name }}\n[Service]\n"
          "ExecStart=/bin/sh -c 'sleep 4; exit 3'\n"
          "[Install]\nWantedBy=multi-user.target\n")


def test_a_native_app_is_up_when_it_answers_on_its_port(
    cloud: Cloud, client_key: tuple[Path, str], site_root: Path, tmp_path: Path
) -> None:
    """The real systemd-apps step: up means answering on 127.0.0.1:<port>, not merely running for a while."""
    inv = load_site("example", site_root)
    ensure_sandbox_secrets(inv)  # as `fab sandbox-up` makes them (left alone when there)
    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATES_DIR, templates)
    natives = [app for app in inv.apps if app.kind == "systemd"]
    assert natives

    def units(text: str, only: str | None = None) -> RenderContext:
        for app in natives:
            if only in (None, app.name):
                (templates / app.systemd.unit_template).write_text(text)
        return RenderContext(inventory=inv, secrets=resolve_all(inv), sandbox=True, host_key=host_key,
                             hostname="apps-test", templates_dir=templates,
                             images=preview_images(inv, sandbox=True))  # rendered, never run here

    host_key = HostKey.generate()
    ctx = units(ANSWERS)
    conn = boot_rendered(cloud, client_key, ctx, "apps-test")
    try:
        wait_for_cloud_init(conn)

        def apps_step(ctx: RenderContext):
            upload(conn, render_host(ctx))
            return run_steps(conn, [s for s in load_steps(ctx) if s.name in ("relaunch-dirs", "systemd-apps")])

        assert "systemd-apps" in apps_step(ctx).changed
        answers = " && ".join(f"(exec 3<>/dev/tcp/127.0.0.1/{app.port})" for app in natives)
        assert conn.run(f"bash -c '{answers}'", hide=True, warn=True, in_stream=False).ok
        assert apps_step(ctx).changed == []

        # running for 4 s was "up" by the old rule (3 s without failing); it never answered
        silent = natives[-1]
        with pytest.raises(RunbookError) as info:
            apps_step(units(SILENT, only=silent.name))
        assert (f"{silent.name}.service did not come up: it stopped before it answered on 127.0.0.1:{silent.port}"
                in str(info.value))
    finally:
        conn.close()
