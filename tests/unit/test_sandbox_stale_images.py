"""The sandbox removes an example image built from other contents only once it is a day old: a sandbox of another
checkout on the same Docker daemon may be about to push or run its own build."""

from __future__ import annotations

from types import SimpleNamespace

from relaunch.sandbox import LABEL
from relaunch.sandbox.images import CONTEXT_LABEL, STALE_AFTER_SECONDS, _created, _remove_stale

NOW = 1_800_000_000.0


def image(context: str, age: float, tag: str) -> SimpleNamespace:
    from datetime import datetime, timezone

    created = datetime.fromtimestamp(NOW - age, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f") + "123Z"
    return SimpleNamespace(id=f"sha256:{context}", short_id=context, tags=[tag],
                           labels={LABEL: "example-image", CONTEXT_LABEL: context}, attrs={"Created": created})


class Client:
    def __init__(self, images: list) -> None:
        self.removed: list[str] = []
        self.images = SimpleNamespace(list=lambda filters: images, remove=self.removed.append)


def test_only_a_day_old_build_of_other_contents_is_removed() -> None:
    client = Client([image("mine", 10, "relaunch-example/blog:mine"),
                     image("other-checkout", 600, "relaunch-example/blog:other-checkout"),
                     image("yesterday", STALE_AFTER_SECONDS + 60, "relaunch-example/blog:yesterday")])
    _remove_stale(client, "relaunch-example/blog", "mine", now=NOW)
    assert client.removed == ["relaunch-example/blog:yesterday"]


def test_dockers_nanosecond_times_are_read() -> None:
    assert abs(_created(image("x", 3600, "t")) - (NOW - 3600)) < 1
    assert _created(SimpleNamespace(attrs={})) > NOW - 10**9  # unknown: taken as now, so kept
