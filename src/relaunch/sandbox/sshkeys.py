"""SSH public keys as DigitalOcean sees them: validation and the MD5 fingerprint."""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct

KEY_TYPES = (
    "ssh-rsa",
    "ssh-ed25519",
    "ssh-dss",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
)


class InvalidKey(ValueError):
    """The text is not an OpenSSH public key line."""


def parse_blob(public_key: str) -> bytes:
    """Given an OpenSSH public key line (``type base64 [comment]``), return the key blob.

    Raise InvalidKey when the type is unknown, the base64 is broken or the blob does not
    start with the same type name (as ``ssh-keygen -l`` would refuse it).
    """
    parts = public_key.strip().split()
    if len(parts) < 2 or parts[0] not in KEY_TYPES:
        raise InvalidKey("Key invalid type, we support 'ssh-rsa', 'ssh-ed25519' and 'ecdsa-sha2-*' keys")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        raise InvalidKey("Key invalid, the base64 part cannot be decoded") from None
    if len(blob) < 4:
        raise InvalidKey("Key invalid, too short")
    (length,) = struct.unpack(">I", blob[:4])
    if blob[4 : 4 + length].decode("ascii", "replace") != parts[0]:
        raise InvalidKey("Key invalid, its type does not match its data")
    return blob


def fingerprint(public_key: str) -> str:
    """Return DigitalOcean's fingerprint of a public key: MD5 of the blob, colon-separated hex.

    Raise InvalidKey if ``public_key`` is not a valid key line.
    """
    digest = hashlib.md5(parse_blob(public_key), usedforsecurity=False).hexdigest()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))
