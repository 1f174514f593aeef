"""Very large trees: every file's metadata compared, a seeded sample of their contents hashed, and the report says so."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from relaunch import transfer
from relaunch.errors import RelaunchError


def listing(root: Path, sampling: transfer.Sampling | None) -> transfer.Listing:
    spec = sampling.arg() if sampling else "-1"
    out = subprocess.run(["python3", "-", str(root), spec], input=transfer._TREE_LISTING.encode(),
                         capture_output=True, check=True).stdout
    return transfer._listing(transfer._json_rows(None, out, "test"))


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "a" / "media"
    for i in range(40):
        (root / f"d{i % 4}").mkdir(parents=True, exist_ok=True)
        (root / f"d{i % 4}" / f"f{i}.bin").write_bytes(bytes([i]) * 1000)
    return root


def hashed(lst: transfer.Listing) -> set[str]:
    return {p for p, e in lst.items() if e.type == "f" and e.content is not None}


def test_a_tree_below_the_threshold_has_every_file_hashed(tree) -> None:
    s = transfer.Sampling("R1", above=40_000, budget=5_000)
    got = listing(tree, s)
    assert len(hashed(got)) == 40 and s.describe(got) == "every file hashed"


def test_above_the_threshold_the_same_seeded_sample_is_hashed_on_both_hosts(tree, tmp_path) -> None:
    copy = tmp_path / "b" / "media"
    shutil.copytree(tree, copy)
    s = transfer.Sampling("20261127T101500Z", above=39_999, budget=5_000)
    here, there = listing(tree, s), listing(copy, s)
    assert hashed(here) == hashed(there) and len(hashed(here)) == 5  # 5 files of 1000 bytes reach the budget
    assert transfer.compare_listings(here, there) == []
    assert all(e.size == 1000 for p, e in there.items() if e.type == "f")  # sizes of all still listed
    other = listing(tree, transfer.Sampling("20261128T101500Z", above=39_999, budget=5_000))
    assert hashed(other) != hashed(here)  # another run, other files
    assert s.describe(here) == ("seeded sample (tree above 39999 bytes): 5 of 40 files, 5000 of 40000 bytes hashed "
                                "(seed 20261127T101500Z); every file's type, size, mode and owner compared")


def test_a_changed_file_in_the_sample_is_found_and_a_size_change_anywhere(tree, tmp_path) -> None:
    copy = tmp_path / "b" / "media"
    shutil.copytree(tree, copy)
    s = transfer.Sampling("R7", above=1, budget=5_000)
    sampled = sorted(hashed(listing(tree, s)))
    (copy / sampled[0]).write_bytes(b"x" * 1000)
    (copy / "d0" / "f0.bin").write_bytes(b"longer" * 200)
    diff = transfer.compare_listings(listing(tree, s), listing(copy, s))
    assert any(sampled[0] in line and "sha256" in line for line in diff)
    assert any("d0/f0.bin" in line and "size 1000 != 1200" in line for line in diff)


def test_a_seed_cannot_break_the_argument() -> None:
    with pytest.raises(RelaunchError, match="without ':'"):
        transfer.Sampling("a:b")
