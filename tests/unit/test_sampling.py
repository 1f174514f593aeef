"""Very large trees: every file's metadata compared, a seeded sample of their contents hashed, and the report says so."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

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


# --------------------------------------------------------------------------- the inventory's verify section

EXAMPLE_TEXT = (Path(__file__).resolve().parents[2] / "inventory" / "example.yml").read_text()


def with_verify(text: str):
    from relaunch.inventory import load_text

    return load_text(EXAMPLE_TEXT + "\nverify:\n" + text, "inventory/example.yml")


def test_the_sampling_threshold_defaults_to_8_gib_and_512_mib_as_the_transfer_does() -> None:
    from relaunch.inventory import load_text
    from relaunch.pipeline.steps import data

    inv = load_text(EXAMPLE_TEXT, "inventory/example.yml")
    got = data.sampling(SimpleNamespace(inv=inv, journal=SimpleNamespace(id="R1")))
    assert (got.above, got.budget) == (8 * 1024**3, 512 * 1024**2) == (transfer.Sampling("R1").above,
                                                                       transfer.Sampling("R1").budget)


@pytest.mark.parametrize("written, above", [("8GiB", 8 * 1024**3), ("'1.5 GB'", 1_500_000_000), ("4096", 4096),
                                             ("1KiB", 1024), ("2kB", 2000), ("3B", 3)])
def test_sizes_are_written_with_or_without_a_unit(written: str, above: int) -> None:
    from relaunch.pipeline.steps import data

    inv = with_verify(f"  sample_above: {written}\n  sample_size: 2KiB\n")
    got = data.sampling(SimpleNamespace(inv=inv, journal=SimpleNamespace(id="R9")))
    assert (got.seed, got.above, got.budget) == ("R9", above, 2048)


@pytest.mark.parametrize("written, expected", [
    ("lots", "verify.sample_above: expected a size in bytes"),
    ("8 parsecs", "verify.sample_above: expected a size in bytes"),
    ("true", "verify.sample_above: expected a size in bytes"),
    ("0", "verify.sample_above"),
])
def test_a_size_that_is_not_one_is_refused_at_its_line(written: str, expected: str) -> None:
    from relaunch.inventory import InventoryError

    with pytest.raises(InventoryError, match=expected):
        with_verify(f"  sample_above: {written}\n")
