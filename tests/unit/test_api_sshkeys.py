from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from relaunch.sandbox.sshkeys import InvalidKey, fingerprint

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl someone@host"


def test_fingerprint_is_md5_colon_hex_of_the_blob() -> None:
    assert fingerprint(KEY) == "65:96:2d:fc:e8:d5:a9:11:64:0c:0f:ea:00:6e:5b:bd"
    assert fingerprint(KEY.rsplit(" ", 1)[0]) == fingerprint(KEY)  # the comment does not count


@pytest.mark.skipif(not shutil.which("ssh-keygen"), reason="ssh-keygen not installed")
def test_fingerprint_matches_ssh_keygen(tmp_path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-N", "", "-f", str(tmp_path / "k")], check=True)
    public = (tmp_path / "k.pub").read_text()
    out = subprocess.run(["ssh-keygen", "-l", "-E", "md5", "-f", str(tmp_path / "k.pub")],
                         check=True, capture_output=True, text=True).stdout
    assert out.split()[1] == "MD5:" + fingerprint(public)


@pytest.mark.parametrize("text", ["", "ssh-rsa", "ssh-foo AAAA", "ssh-ed25519 !!!", "ssh-rsa " + KEY.split()[1]])
def test_invalid_keys_are_refused(text: str) -> None:
    with pytest.raises(InvalidKey):
        fingerprint(text)
