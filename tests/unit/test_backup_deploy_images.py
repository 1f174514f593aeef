"""The deploy images a backup records: every compose service's digest, also of a service stopped right now."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from relaunch.backup import runner

DIGEST = "sha256:" + "ab" * 32
OLD = "sha256:" + "cd" * 32


def container(cid: str, service: str, image: str, running: bool, oneoff: bool = False) -> dict:
    labels = {"com.docker.compose.project": "blog", "com.docker.compose.service": service}
    if oneoff:
        labels["com.docker.compose.oneoff"] = "True"
    return {"Id": cid, "Image": f"sha256:{cid * 8}", "Config": {"Labels": labels, "Image": image},
            "State": {"Running": running, "Status": "running" if running else "exited"}}


def fake_docker(tmp_path: Path, containers: list[dict]) -> list[str]:
    """A ``docker`` that answers ps (running only, or all with -a) and inspect from ``containers``."""
    script = tmp_path / "docker.py"
    script.write_text(f"""
import json, sys
containers = json.loads({json.dumps(json.dumps(containers))})
args = sys.argv[1:]
if args[0] == "ps":
    for c in containers:
        if "-a" in args or c["State"]["Running"]:
            print(c["Id"])
elif args[0] == "inspect":
    print(json.dumps([c for c in containers if c["Id"] in args[1:]]))
else:
    sys.exit(f"unexpected: {{args}}")
""")
    return [sys.executable, str(script)]


def record(tmp_path: Path, containers: list[dict]) -> dict:
    config = {"compose_apps": [{"app": "blog", "services": ["web", "worker"]}], "docker": fake_docker(tmp_path, containers),
              "timeouts": {"docker": 30}}
    return runner.deploy_images(config)


def test_a_stopped_service_still_gets_its_image_recorded(tmp_path: Path) -> None:
    found = record(tmp_path, [container("a1", "web", f"reg/blog-web@{DIGEST}", running=True),
                              container("b2", "worker", f"reg/blog-worker@{DIGEST}", running=False)])
    assert found == {"images": {"blog": {"web": f"reg/blog-web@{DIGEST}", "worker": f"reg/blog-worker@{DIGEST}"}}}


def test_a_running_container_wins_over_a_stopped_one_and_one_off_runs_are_left_out(tmp_path: Path) -> None:
    found = record(tmp_path, [container("a1", "web", f"reg/blog-web@{DIGEST}", running=True),
                              container("a0", "web", f"reg/blog-web@{OLD}", running=False),
                              container("c3", "web", f"reg/blog-web@{OLD}", running=True, oneoff=True),
                              container("b2", "worker", f"reg/blog-worker@{DIGEST}", running=True)])
    assert found == {"images": {"blog": {"web": f"reg/blog-web@{DIGEST}", "worker": f"reg/blog-worker@{DIGEST}"}}}


def test_a_service_with_no_container_at_all_is_a_problem_not_a_failure(tmp_path: Path) -> None:
    found = record(tmp_path, [container("a1", "web", f"reg/blog-web@{DIGEST}", running=True)])
    assert found["images"] == {"blog": {"web": f"reg/blog-web@{DIGEST}"}}
    assert found["problems"] == ["blog/worker: no container (running or stopped)"]
