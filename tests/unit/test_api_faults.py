from __future__ import annotations

import pytest

from relaunch.sandbox.faults import Faults, FaultSpecError


def test_response_fault_matches_method_and_prefix_and_counts_down() -> None:
    faults = Faults()
    faults.add({"status": 429, "count": 2, "method": "post", "path_prefix": "/v2/droplets", "retry_after": 9})
    assert faults.take_response("GET", "/v2/droplets") is None
    assert faults.take_response("POST", "/v2/account") is None
    first = faults.take_response("POST", "/v2/droplets/1/actions")
    assert first is not None and first.retry_after == 9
    assert faults.take_response("POST", "/v2/droplets") is not None
    assert faults.take_response("POST", "/v2/droplets") is None


def test_create_faults_apply_in_order() -> None:
    faults = Faults()
    faults.add({"droplet_create": "never_active"})
    faults.add({"droplet_create": "create_error", "create_count": 2})
    assert [faults.take_create() for _ in range(4)] == ["never_active", "create_error", "create_error", None]


def test_clear_removes_everything() -> None:
    faults = Faults()
    faults.add({"status": 500, "count": 3, "droplet_create": "create_error"})
    faults.clear()
    assert faults.describe() == {"responses": [], "droplet_create": []}


@pytest.mark.parametrize(("spec", "field"), [
    ({"status": 404}, "status"),
    ({"status": 500, "count": 0}, "count"),
    ({"droplet_create": "explode"}, "droplet_create"),
    ({"colour": "red"}, "colour"),
    ({}, "body"),
    ([], "body"),
])
def test_bad_fault_specs_name_the_field(spec: object, field: str) -> None:
    with pytest.raises(FaultSpecError) as err:
        Faults().add(spec)  # type: ignore[arg-type]
    assert err.value.field == field
