"""Runbooks on a real sandbox Droplet: rendered user-data boots it, steps run over pinned SSH, twice.

One Droplet, booted from relaunch's own cloud-init template; a small synthetic runbook
(plus the generic ``relaunch-dirs`` step) runs twice: the first run changes the host, the
second changes nothing. A failing step stops the run and is named with its place.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from relaunch.cloud import Cloud
from relaunch.inventory.model import Inventory
from relaunch.remote import HostKey, connect, wait_for_ssh
from relaunch.render import RenderContext, render_user_data
from relaunch.runbooks import RunbookError, load_steps, run_steps

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
    key = cloud.ensure_ssh_key(client_key[1], "relaunch-test")
    droplet = cloud.create_droplet(
        name="runbook-test", region="fra1", size="s-1vcpu-1gb", image="debian-12-x64",
        ssh_keys=[key.fingerprint], user_data=render_user_data(ctx), tags=["relaunch-test"], ssh_timeout=180,
    )
    conn = connect(droplet.ipv4, host_key.public_line, client_key[0])  # the host key from our user-data
    try:
        wait_for_ssh(conn, timeout=120)

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
