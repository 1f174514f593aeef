"""Where the DigitalOcean API is and how to authenticate to it.

Given an endpoint URL or a token source, return a validated value; raise
`relaunch.errors.RelaunchError` with a message a user can act on otherwise.
The token is never part of any message this module produces.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping
from urllib.parse import urlsplit

from relaunch.errors import RelaunchError

if TYPE_CHECKING:
    from relaunch.cloud.client import Cloud
    from relaunch.inventory.model import Inventory

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "https://api.digitalocean.com/v2/"
ENDPOINT_ENV = "DIGITALOCEAN_END_POINT"
TOKEN_ENV = "DIGITALOCEAN_ACCESS_TOKEN"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def validate_endpoint(url: str) -> str:
    """Given an API base URL, return it unchanged if usable.

    Usable means: http or https, a host, a path ending in ``/v2/`` (the
    library joins relative paths such as ``droplets/`` onto it, so without the
    trailing slash ``/v2`` would be replaced rather than extended), no
    credentials, query or fragment. Plain http is accepted only for a loopback
    host (the sandbox): over anything else it would send the bearer token in
    clear text. Raise RelaunchError otherwise.
    """
    if not isinstance(url, str) or not url:
        raise RelaunchError("DigitalOcean API endpoint is empty; expected e.g. https://api.digitalocean.com/v2/")
    parts = urlsplit(url)
    problem = None
    if parts.scheme not in ("http", "https"):
        problem = "it must start with http:// or https://"
    elif not parts.hostname:
        problem = "it has no host"
    elif parts.username or parts.password:
        problem = "it must not contain credentials"
    elif parts.query or parts.fragment:
        problem = "it must not have a query string or fragment"
    elif not parts.path.endswith("/v2/"):
        problem = "its path must end in /v2/ (with the trailing slash)"
    elif parts.scheme == "http" and not _is_loopback(parts.hostname):
        problem = "plain http is only allowed to a loopback address (the token would travel in clear text)"
    if problem:
        raise RelaunchError(f"DigitalOcean API endpoint {url!r} is not usable: {problem}")
    return url


def _check_token_text(token: str, source: str) -> str:
    token = token.strip()
    if not token:
        raise RelaunchError(f"DigitalOcean API token from {source} is empty")
    # A newline or space inside would end up in the Authorization header.
    if any(ch.isspace() for ch in token) or not token.isprintable():
        raise RelaunchError(f"DigitalOcean API token from {source} contains whitespace or control characters")
    return token


def read_token_file(path: str | os.PathLike[str]) -> str:
    """Given the path of a file holding only the token, return the token.

    Raise RelaunchError if the file is missing, not a regular file, readable or
    writable by group or others (chmod 600 it), or empty.
    """
    p = Path(path)
    try:
        st = p.lstat()
    except OSError as exc:
        raise RelaunchError(f"cannot read DigitalOcean token file {str(p)!r}: {exc.strerror}") from None
    if stat.S_ISLNK(st.st_mode):
        # its mode would be the target's, and a chmod hint would change the target: name the file itself
        raise RelaunchError(
            f"DigitalOcean token file {str(p)!r} is a symlink (to {os.path.realpath(p)}); name the file itself"
        )
    if not stat.S_ISREG(st.st_mode):
        raise RelaunchError(f"DigitalOcean token file {str(p)!r} is not a regular file")
    if st.st_mode & 0o077:
        raise RelaunchError(
            f"DigitalOcean token file {str(p)!r} is accessible by group or others "
            f"(mode {stat.S_IMODE(st.st_mode):04o}); run: chmod 600 {p}"
        )
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as fh:
            text = fh.read().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RelaunchError(f"cannot read DigitalOcean token file {str(p)!r}: {type(exc).__name__}") from None
    return _check_token_text(text, f"file {str(p)!r}")


def load_token(
    token_file: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> str:
    """Return the API token from `token_file` if given, else from $DIGITALOCEAN_ACCESS_TOKEN.

    Never from inventory text. Raise RelaunchError when neither yields a token.
    """
    if token_file is not None:
        return read_token_file(token_file)
    env = os.environ if environ is None else environ
    value = env.get(TOKEN_ENV)
    if value is None:
        raise RelaunchError(
            f"no DigitalOcean API token: set {TOKEN_ENV} or pass a token file (mode 600)"
        )
    return _check_token_text(value, f"${TOKEN_ENV}")


def endpoint_from_env(environ: Mapping[str, str] | None = None) -> str:
    """Return $DIGITALOCEAN_END_POINT validated, or the public API when unset or empty."""
    env = os.environ if environ is None else environ
    return validate_endpoint(env.get(ENDPOINT_ENV) or DEFAULT_ENDPOINT)


def site_token(inv: Inventory, environ: Mapping[str, str] | None = None) -> str:
    """Return the API token a DigitalOcean site names in ``provider.token``, through the secrets resolver.

    The inventory's reference is how the user names their token, so it wins: when
    $DIGITALOCEAN_ACCESS_TOKEN holds a different token, say so in the log (never either
    value) and use the inventory's. Raise RelaunchError (an InventoryError naming file,
    line and key) if the site is not a DigitalOcean site or the reference cannot be resolved.
    """
    from relaunch.inventory.secrets import resolve_one

    if inv.provider.kind != "digitalocean" or inv.provider.token is None:
        raise RelaunchError(f"site {inv.site!r} is not a DigitalOcean site with provider.token (provider.kind is {inv.provider.kind!r})")
    secret = resolve_one(inv, ("provider", "token"))
    token = _check_token_text(secret.reveal(), f"{secret.ref} (provider.token)")
    env = os.environ if environ is None else environ
    other = (env.get(TOKEN_ENV) or "").strip()
    if other and other != token:
        log.warning(
            "$%s holds a different token than provider.token (%s) of site %s; using the inventory's",
            TOKEN_ENV, secret.ref, inv.site,
        )
    return token


def open_site_cloud(inv: Inventory, environ: Mapping[str, str] | None = None, **kwargs: Any) -> Cloud:
    """Return a Cloud for a DigitalOcean site: its ``provider.token`` (see :func:`site_token`), the
    endpoint from $DIGITALOCEAN_END_POINT (default: the public API). Other keyword arguments go to
    the Cloud. A sandbox site's cloud is the running sandbox (its own token), not this.
    Raise RelaunchError when the token cannot be had.
    """
    from relaunch.cloud.client import Cloud

    return Cloud(token=site_token(inv, environ), endpoint=endpoint_from_env(environ), **kwargs)
