"""Pure logic of the cloud adapter: endpoint validation, token loading, backoff from headers."""

from __future__ import annotations

from email.utils import formatdate

import pytest

from relaunch.cloud import RetryPolicy, load_token, read_token_file, ssh_key_fingerprint, validate_endpoint
from relaunch.cloud.config import endpoint_from_env
from relaunch.cloud.retry import backoff_delay, retry_delay, server_delay
from relaunch.errors import RelaunchError

TOKEN = "dop_v1_" + "f" * 64


@pytest.mark.parametrize(
    "url",
    ["https://api.digitalocean.com/v2/", "http://127.0.0.1:8080/v2/", "http://localhost:1/v2/", "http://[::1]:5/v2/",
     "https://proxy.example/do/v2/"],
)
def test_validate_endpoint_accepts(url):
    assert validate_endpoint(url) == url


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://127.0.0.1:8080/v2", "must end in /v2/"),
        ("http://127.0.0.1:8080/", "must end in /v2/"),
        ("ftp://127.0.0.1/v2/", "http:// or https://"),
        ("127.0.0.1:8080/v2/", "http:// or https://"),
        ("http:///v2/", "no host"),
        ("https://user:pw@api.digitalocean.com/v2/", "credentials"),
        ("https://api.digitalocean.com/v2/?x=1", "query"),
        ("http://api.digitalocean.com/v2/", "loopback"),
        ("", "empty"),
    ],
)
def test_validate_endpoint_rejects_with_reason(url, why):
    with pytest.raises(RelaunchError, match=why):
        validate_endpoint(url)


def test_endpoint_from_env_defaults_to_public_api():
    assert endpoint_from_env({}) == "https://api.digitalocean.com/v2/"
    assert endpoint_from_env({"DIGITALOCEAN_END_POINT": "http://127.0.0.1:9/v2/"}) == "http://127.0.0.1:9/v2/"
    with pytest.raises(RelaunchError, match="/v2/"):
        endpoint_from_env({"DIGITALOCEAN_END_POINT": "http://127.0.0.1:9"})


def test_read_token_file_accepts_0600_and_strips(tmp_path):
    p = tmp_path / "token"
    p.write_text(TOKEN + "\n")
    p.chmod(0o600)
    assert read_token_file(p) == TOKEN
    assert load_token(p, environ={"DIGITALOCEAN_ACCESS_TOKEN": "other"}) == TOKEN


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_read_token_file_refuses_group_or_other_access(tmp_path, mode):
    p = tmp_path / "token"
    p.write_text(TOKEN)
    p.chmod(mode)
    with pytest.raises(RelaunchError, match="chmod 600") as info:
        read_token_file(p)
    assert TOKEN not in str(info.value)


def test_read_token_file_missing_empty_or_directory(tmp_path):
    with pytest.raises(RelaunchError, match="cannot read"):
        read_token_file(tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.write_text("\n")
    empty.chmod(0o600)
    with pytest.raises(RelaunchError, match="empty"):
        read_token_file(empty)
    d = tmp_path / "dir"
    d.mkdir(mode=0o700)
    with pytest.raises(RelaunchError, match="not a regular file"):
        read_token_file(d)


def test_load_token_from_env_and_errors():
    assert load_token(environ={"DIGITALOCEAN_ACCESS_TOKEN": f" {TOKEN}\n"}) == TOKEN
    with pytest.raises(RelaunchError, match="DIGITALOCEAN_ACCESS_TOKEN"):
        load_token(environ={})
    with pytest.raises(RelaunchError, match="whitespace") as info:
        load_token(environ={"DIGITALOCEAN_ACCESS_TOKEN": "abc\r\nX-Injected: 1"})
    assert "abc" not in str(info.value)


def test_ssh_key_fingerprint_is_md5_colon_form():
    # ssh-keygen -l -E md5 -f key.pub prints the same digest for this blob.
    import base64
    import hashlib

    blob = b"\x00\x00\x00\x0bssh-ed25519" + b"\x00\x00\x00\x20" + bytes(range(32))
    key = "ssh-ed25519 " + base64.b64encode(blob).decode() + " me@host"
    digest = hashlib.md5(blob).hexdigest()
    assert ssh_key_fingerprint(key) == ":".join(digest[i:i + 2] for i in range(0, 32, 2))
    with pytest.raises(RelaunchError, match="public key"):
        ssh_key_fingerprint("not a key")


def _policy(**kw):
    return RetryPolicy(rng=lambda: 0.5, wall_clock=lambda: 1_700_000_000.0, **kw)


def test_backoff_delay_grows_exponentially_with_bounded_jitter():
    lo = RetryPolicy(rng=lambda: 0.0, base=1.0, cap=30.0)
    hi = RetryPolicy(rng=lambda: 0.999999, base=1.0, cap=30.0)
    assert [backoff_delay(n, lo) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]
    assert backoff_delay(3, hi) == pytest.approx(4.0, abs=1e-4)
    assert backoff_delay(20, hi) <= 30.0 and backoff_delay(20, lo) == 15.0


def test_server_delay_reads_retry_after_seconds_and_http_date():
    now = 1_700_000_000.0
    assert server_delay(429, {"Retry-After": "7"}, now) == 7.0
    assert server_delay(503, {"retry-after": "2.5"}, now) == 2.5
    assert server_delay(429, {"Retry-After": formatdate(now + 12, usegmt=True)}, now) == pytest.approx(12, abs=1)
    assert server_delay(429, {"Retry-After": "-3"}, now) == 0.0
    assert server_delay(429, {"Retry-After": "soon"}, now) is None


def test_server_delay_reads_ratelimit_reset_epoch_on_429_or_exhausted_budget():
    now = 1_700_000_000.0
    assert server_delay(429, {"RateLimit-Reset": str(int(now) + 20)}, now) == 20.0
    assert server_delay(500, {"RateLimit-Reset": str(int(now) + 20), "RateLimit-Remaining": "0"}, now) == 20.0
    # A 500 with budget left: the reset time says nothing about when to retry.
    assert server_delay(500, {"RateLimit-Reset": str(int(now) + 20), "RateLimit-Remaining": "10"}, now) is None
    assert server_delay(429, {"RateLimit-Reset": str(int(now) - 5)}, now) == 0.0
    assert server_delay(429, {"RateLimit-Reset": "garbage"}, now) is None
    # Retry-After wins over the reset time.
    assert server_delay(429, {"Retry-After": "3", "RateLimit-Reset": str(int(now) + 50)}, now) == 3.0


def test_retry_delay_uses_server_value_as_floor_plus_small_jitter():
    p = _policy()
    assert retry_delay(1, 429, {"Retry-After": "10"}, p) == 10.5
    assert retry_delay(1, 500, {}, p) == backoff_delay(1, p)
    assert retry_delay(3, None, {}, p) == backoff_delay(3, p)


def test_token_env_is_not_required_when_passed_explicitly(monkeypatch):
    from relaunch.cloud import Cloud

    monkeypatch.delenv("DIGITALOCEAN_ACCESS_TOKEN", raising=False)
    c = Cloud(token=TOKEN, endpoint="http://127.0.0.1:9/v2/")
    assert TOKEN not in repr(c) and TOKEN not in str(vars(c))
    with pytest.raises(RelaunchError, match="timeout"):
        Cloud(token=TOKEN, endpoint="http://127.0.0.1:9/v2/", timeout=0)
    with pytest.raises(RelaunchError, match="/v2/"):
        Cloud(token=TOKEN, endpoint="http://127.0.0.1:9/v2")
