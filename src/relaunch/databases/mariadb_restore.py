"""A MariaDB/MySQL restore that builds each table's plain indexes after its rows (stdlib only; runs ON the host).

``python3 -c SOURCE CLIENT-ARGV...`` reads a ``mariadb-dump``/``mysqldump`` SQL dump on stdin
and feeds it to the client ``CLIENT-ARGV`` (``mariadb --batch DB``), changed in one way: the
plain secondary indexes (the ``KEY`` lines) of each ``CREATE TABLE`` are held back and added
once the rows are in, by one ``ALTER TABLE ... ADD KEY ...`` per table at the end of the
dump. InnoDB then builds each such index by sorting its rows once instead of inserting every
row into it as the row comes, in random order for an index on, say, a timestamp: on a sandbox
host, a table of 4 million rows (860 MB of dump) with one DATETIME index restored in 41 s
instead of 57 s (the README's benchmark section).

Left as they are, so that nothing can fail or change meaning for it: UNIQUE, FULLTEXT and
SPATIAL keys; every key of a table with a FOREIGN KEY or WITH SYSTEM VERSIONING; a key whose
first column is the table's AUTO_INCREMENT column (it must be indexed from the start); and
any CREATE TABLE whose lines are not the dump programs' one-definition-per-line layout. The
keys held back so far are added before a CREATE TABLE with a FOREIGN KEY (its parent may need
one of them) and before a ``USE``. The indexes end up as in the dump (same names, columns and
options; SHOW CREATE TABLE lists plain keys after the unique ones either way).

Exit status: the client's (a client that stops reading ends the feeding; its status says why).
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterable, Iterator

_BUFFER = 1 << 20
_NAME = rb"`(?:[^`]|``)+`"
_CREATE = re.compile(rb"CREATE TABLE (" + _NAME + rb") \(\n\Z")
_KEY = re.compile(rb"  KEY " + _NAME + rb" \((" + _NAME + rb")")
_AUTO = re.compile(rb"  (" + _NAME + rb") [^\n]* AUTO_INCREMENT\b")


def _laid_out(inner: list[bytes]) -> bool:
    """Whether a CREATE TABLE's definitions are one per line, each but the last ending in a comma."""
    return bool(inner) and all(
        line.startswith(b"  ") and line[2:3] not in (b" ", b"\n") and line.endswith(b"\n" if i == len(inner) - 1 else b",\n")
        for i, line in enumerate(inner)) and not inner[-1].endswith(b",\n")


def hold_keys(block: list[bytes]) -> tuple[list[bytes], bytes | None]:
    """Given one CREATE TABLE statement's lines (of a table without a FOREIGN KEY), return them without the keys
    held back and the ALTER TABLE that adds those (None: nothing held back, the lines unchanged)."""
    create = _CREATE.match(block[0])
    inner, last = block[1:-1], block[-1]
    if create is None or not _laid_out(inner) or b"WITH SYSTEM VERSIONING" in last:
        return block, None
    auto = next((m.group(1) for m in map(_AUTO.match, inner) if m), None)
    keep: list[bytes] = []
    held: list[bytes] = []
    for i, line in enumerate(inner):
        text = line[:-1] if i == len(inner) - 1 else line[:-2]
        key = _KEY.match(line)
        if key and key.group(1) != auto:
            held.append(text.strip())
        else:
            keep.append(text)
    if not held or not keep:
        return block, None
    alter = b"ALTER TABLE " + create.group(1) + b" " + b", ".join(b"ADD " + k for k in held) + b";\n"
    return [block[0], b",\n".join(keep) + b"\n", last], alter


def defer_keys(lines: Iterable[bytes]) -> Iterator[bytes]:
    """The dump's lines with each table's plain keys held back and added at the end (see the module)."""
    pending: list[bytes] = []
    block: list[bytes] | None = None
    for line in lines:
        if block is not None:
            block.append(line)
            if line.startswith(b")"):
                if any(b"FOREIGN KEY" in part for part in block):  # as dumped, after the keys its parent may need
                    yield from pending
                    pending.clear()
                    yield from block
                else:
                    out, alter = hold_keys(block)
                    yield from out
                    if alter:
                        pending.append(alter)
                block = None
        elif line.startswith(b"CREATE TABLE `"):
            block = [line]
        else:
            if line.startswith(b"USE "):
                yield from pending
                pending.clear()
            yield line
    if block:
        yield from block
    yield from pending


def main(argv: list[str]) -> int:
    client = subprocess.Popen(argv, stdin=subprocess.PIPE, bufsize=_BUFFER)
    assert client.stdin is not None
    try:
        for line in defer_keys(open(sys.stdin.fileno(), "rb", buffering=_BUFFER, closefd=False)):
            client.stdin.write(line)
        client.stdin.close()
    except BrokenPipeError:
        pass  # the client stopped reading: its exit status says why
    return client.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
