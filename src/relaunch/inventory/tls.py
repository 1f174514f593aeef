"""The site's TLS certificate: read it, check it covers the site, and make one for a sandbox site.

``proxy.tls`` names a certificate file (public, a path), its key (a secret reference) and
optionally the CA the health checks trust. A real site brings its own (e.g. Let's Encrypt's
``fullchain.pem``); a sandbox site gets a throwaway CA and a certificate signed by it for
every app's domain, made beside its other secrets (the CA's own key is never kept: when
the certificate must change, a new CA is made with it).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from relaunch.inventory.errors import Problem
from relaunch.inventory.loader import source_of
from relaunch.inventory.model import Inventory
from relaunch.state import make_private_dirs, write_atomic

log = logging.getLogger(__name__)

#: A sandbox certificate is made for this long and remade when less than RENEW_BEFORE is left.
SANDBOX_VALIDITY = dt.timedelta(days=90)
RENEW_BEFORE = dt.timedelta(days=30)


class CertificateError(ValueError):
    """The certificate file is missing, unreadable, or not a PEM certificate."""


def names_to_cover(inv: Inventory) -> list[str]:
    """Every host name the proxy serves over TLS: each app's domain and each https check's Host."""
    names: list[str] = []
    for app in inv.apps:
        for name in [app.domain, *(c.host for c in app.health if c.scheme == "https" and c.host)]:
            if name not in names:
                names.append(name)
    return names


def read_certificate(path: str | Path) -> tuple[str, x509.Certificate]:
    """Return (the PEM text, the first certificate in it). Raise CertificateError saying what is wrong."""
    try:
        text = Path(path).read_text(encoding="ascii")
    except FileNotFoundError:
        raise CertificateError(f"{path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CertificateError(f"{path} cannot be read as PEM text: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        chain = x509.load_pem_x509_certificates(text.encode())
    except ValueError:
        raise CertificateError(f"{path} holds no PEM certificate") from None
    return text, chain[0]


def _covered(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [n.lower() for n in san.get_values_for_type(x509.DNSName)]


def _matches(name: str, pattern: str) -> bool:
    if pattern.startswith("*."):
        head, _, rest = name.partition(".")
        return bool(head) and rest == pattern[2:]
    return name == pattern


def problems(inv: Inventory, cert: x509.Certificate, now: dt.datetime | None = None,
             renew_before: dt.timedelta = dt.timedelta(0)) -> list[str]:
    """What is wrong with ``cert`` for ``inv``: names it does not cover, expiry. Empty when it fits."""
    now = now or dt.datetime.now(dt.timezone.utc)
    found: list[str] = []
    covered = _covered(cert)
    missing = [n for n in names_to_cover(inv) if not any(_matches(n, p) for p in covered)]
    if missing:
        found.append(f"does not cover {', '.join(missing)} (it covers {', '.join(covered) or 'no DNS name'})")
    if cert.not_valid_after_utc <= now + renew_before:
        when = "expired" if cert.not_valid_after_utc <= now else "expires"
        found.append(f"{when} {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
    if cert.not_valid_before_utc > now:
        found.append(f"is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC")
    return found


def key_matches(cert: x509.Certificate, key_pem: str) -> bool:
    """Whether ``key_pem`` (a private key) belongs to ``cert``."""
    try:
        key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    except (ValueError, TypeError):
        return False
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    return key.public_key().public_bytes(der, pub) == cert.public_key().public_bytes(der, pub)


@dataclass(frozen=True)
class SandboxCertificate:
    certificate: str  # PEM: leaf then CA
    key: str  # PEM, the leaf's private key
    ca: str  # PEM, the CA certificate


def make_sandbox_certificate(site: str, names: list[str], now: dt.datetime | None = None) -> SandboxCertificate:
    """A new CA (its key dropped afterwards) and a certificate it signs for ``names``."""
    now = now or dt.datetime.now(dt.timezone.utc)
    start, end = now - dt.timedelta(minutes=5), now + SANDBOX_VALIDITY
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"relaunch sandbox CA for {site}")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName([_general_name(n) for n in names]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    ca_pem = ca.public_bytes(pem).decode()
    key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    return SandboxCertificate(leaf.public_bytes(pem).decode() + ca_pem, key_pem, ca_pem)


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def ensure_sandbox_certificate(inv: Inventory, key_path: Path) -> list[Path]:
    """For a sandbox site with ``proxy.tls``: make its certificate when missing, not covering or expiring.

    ``key_path`` is where the ``proxy.tls.key`` reference points (a ``file:`` secret). Write
    the key 0600, the certificate and CA 0644 (directories 0700 when made); return the
    files written (none when the current certificate fits). Other sites: nothing.
    """
    tls = inv.proxy.tls
    if inv.provider.kind != "sandbox" or tls is None:
        return []
    paths = [Path(tls.certificate), key_path, *([Path(tls.ca)] if tls.ca else [])]
    if all(p.exists() for p in paths):
        try:
            _, cert = read_certificate(tls.certificate)
            if not problems(inv, cert, renew_before=RENEW_BEFORE) and key_matches(cert, key_path.read_text()):
                return []
        except (CertificateError, OSError):
            pass
    made = make_sandbox_certificate(inv.site, names_to_cover(inv))
    _write(key_path, made.key, 0o600)
    _write(Path(tls.certificate), made.certificate, 0o644)
    if tls.ca:
        _write(Path(tls.ca), made.ca, 0o644)
    log.info("made a sandbox TLS certificate for %s", ", ".join(names_to_cover(inv)))
    return paths


def site_problems(inv: Inventory, key_pem: str | None) -> list[Problem]:
    """What ``fab check`` says of a site's TLS files: unreadable, not covering, expired, key not matching.

    A sandbox site's certificate is relaunch's to make (and remake), so only its readable
    files are looked at there. ``key_pem`` is the resolved ``proxy.tls.key`` (None when it
    could not be resolved: that problem is reported with the other secrets).
    """
    tls = inv.proxy.tls
    if tls is None:
        return []
    src = source_of(inv)
    sandbox = inv.provider.kind == "sandbox"

    def problem(key: str, message: str) -> Problem:
        return Problem(src.file, src.line_of(("proxy", "tls", key)), f"proxy.tls.{key}", message, "tls")

    found: list[Problem] = []
    if tls.ca and not (sandbox and not Path(tls.ca).exists()):
        try:
            x509.load_pem_x509_certificates(Path(tls.ca).read_bytes())
        except (OSError, ValueError) as exc:
            found.append(problem("ca", f"{tls.ca}: expected PEM CA certificates ({getattr(exc, 'strerror', None) or exc})"))
    if sandbox and not Path(tls.certificate).exists():
        return found
    try:
        _, cert = read_certificate(tls.certificate)
    except CertificateError as exc:
        return [*found, problem("certificate", f"expected a PEM certificate: {exc}")]
    if not sandbox:
        found += [problem("certificate", f"{tls.certificate} {p}") for p in problems(inv, cert)]
        if key_pem is not None and not key_matches(cert, key_pem):
            found.append(problem("key", f"{tls.key} is not the private key of {tls.certificate}"))
    return found


def _write(path: Path, text: str, mode: int) -> None:
    make_private_dirs(path.parent)
    write_atomic(path, text.encode(), mode)


__all__ = [
    "CertificateError",
    "SandboxCertificate",
    "ensure_sandbox_certificate",
    "key_matches",
    "make_sandbox_certificate",
    "names_to_cover",
    "problems",
    "read_certificate",
    "site_problems",
]
