"""relaunch.databases.mariadb_restore: which keys a MariaDB restore holds back until the rows are in, and how it
feeds the client (a real subprocess)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from relaunch.databases import mariadb_restore
from relaunch.databases.mariadb_restore import defer_keys

VIEWS = b"""CREATE TABLE `page_views` (
  `id` bigint(20) unsigned NOT NULL AUTO_INCREMENT,
  `path` varchar(255) NOT NULL DEFAULT ',',
  `ts` datetime(6) NOT NULL,
  PRIMARY KEY (`id`),
  UNIQUE KEY `one_path` (`path`,`ts`),
  KEY `page_views_ts` (`ts`),
  KEY `by ``path``` (`path`(10)) COMMENT 'a, b'
) ENGINE=InnoDB AUTO_INCREMENT=5 DEFAULT CHARSET=utf8mb4;
"""
DATA = b"""LOCK TABLES `page_views` WRITE;
INSERT INTO `page_views` VALUES
(1,'CREATE TABLE `x` (','2026-01-01 00:00:00.000000');
UNLOCK TABLES;
"""


def run(dump: bytes) -> bytes:
    return b"".join(defer_keys(dump.splitlines(keepends=True)))


def test_plain_keys_are_added_after_every_row_and_the_rest_of_the_table_is_as_dumped() -> None:
    out = run(b"-- head\n" + VIEWS + DATA + b"-- Dump completed\n")
    assert out == (b"-- head\n" + b"""CREATE TABLE `page_views` (
  `id` bigint(20) unsigned NOT NULL AUTO_INCREMENT,
  `path` varchar(255) NOT NULL DEFAULT ',',
  `ts` datetime(6) NOT NULL,
  PRIMARY KEY (`id`),
  UNIQUE KEY `one_path` (`path`,`ts`)
) ENGINE=InnoDB AUTO_INCREMENT=5 DEFAULT CHARSET=utf8mb4;
""" + DATA + b"-- Dump completed\n"
        + b"ALTER TABLE `page_views` ADD KEY `page_views_ts` (`ts`), ADD KEY `by ``path``` (`path`(10)) COMMENT 'a, b';\n")


def test_a_key_led_by_the_auto_increment_column_stays_in_its_table() -> None:
    table = b"""CREATE TABLE `t` (
  `a` int NOT NULL,
  `id` int NOT NULL AUTO_INCREMENT,
  `b` int NOT NULL,
  PRIMARY KEY (`a`,`id`),
  KEY `id` (`id`),
  KEY `b` (`b`)
) ENGINE=InnoDB;
"""
    out = run(table)
    assert b"  KEY `id` (`id`)\n) ENGINE" in out
    assert out.endswith(b"ALTER TABLE `t` ADD KEY `b` (`b`);\n")


def test_a_table_with_a_foreign_key_is_as_dumped_and_the_keys_held_so_far_come_before_it() -> None:
    child = b"""CREATE TABLE `child` (
  `id` int NOT NULL,
  `ts` datetime(6) NOT NULL,
  KEY `by_ts` (`ts`),
  CONSTRAINT `fk` FOREIGN KEY (`ts`) REFERENCES `page_views` (`ts`)
) ENGINE=InnoDB;
"""
    out = run(VIEWS + DATA + child)
    alter = out.index(b"ALTER TABLE `page_views` ADD KEY")
    assert alter < out.index(b"CREATE TABLE `child`")
    assert out.endswith(child)


def test_tables_laid_out_otherwise_or_system_versioned_are_as_dumped() -> None:
    odd = b"""CREATE TABLE `t` (
  `note` text NOT NULL DEFAULT 'two
lines',
  KEY `k` (`note`(5))
) ENGINE=InnoDB;
"""
    versioned = VIEWS.replace(b"CHARSET=utf8mb4;", b"CHARSET=utf8mb4 WITH SYSTEM VERSIONING;")
    assert run(odd) == odd
    assert run(versioned) == versioned


def test_keys_held_back_are_added_before_the_dump_changes_database() -> None:
    out = run(VIEWS + DATA + b"USE `other`;\n")
    assert out.index(b"ALTER TABLE `page_views`") < out.index(b"USE `other`;")


def test_a_dump_cut_inside_a_create_table_passes_on_unchanged() -> None:
    cut = VIEWS.splitlines(keepends=True)[:4]
    assert run(b"".join(cut)) == b"".join(cut)


def script(tmp_path: Path, dump: bytes, client: str) -> subprocess.CompletedProcess:
    # as the host runs it: python3 -c SOURCE CLIENT-ARGV...
    source = Path(mariadb_restore.__file__).read_text()
    return subprocess.run([sys.executable, "-c", source, "sh", "-c", client], input=dump, capture_output=True,
                          timeout=60, cwd=tmp_path)


def test_the_feeder_gives_the_client_the_dump_and_exits_with_its_status(tmp_path: Path) -> None:
    done = script(tmp_path, VIEWS + DATA, "cat > got.sql; exit 3")
    assert done.returncode == 3
    assert (tmp_path / "got.sql").read_bytes() == run(VIEWS + DATA)


def test_a_client_that_stops_reading_ends_the_feeding_with_its_status(tmp_path: Path) -> None:
    big = VIEWS + DATA * 200_000  # megabytes: more than a pipe holds
    done = script(tmp_path, big, "head -c 10 > /dev/null; exit 1")
    assert done.returncode == 1
    assert done.stderr == b""
