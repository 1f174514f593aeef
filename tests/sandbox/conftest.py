"""Sandbox tests: a real sandbox cloud (API on loopback, Droplets as Debian containers).

Their fixtures (sandbox_api, cloud, site_root, target, up) are in tests/conftest.py, shared with
tests/faults/.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.sandbox
