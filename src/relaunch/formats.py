"""How one inventory value is written in each language relaunch writes it in, and which values each can carry.

A value from the inventory (or a secret) may pass through several readers before it
reaches its consumer: the shell (runbooks quote it with ``shlex.quote``), an env file
read by systemd's ``EnvironmentFile=``, Compose v1 (Debian 12's docker-compose 1.29,
python-dotenv 0.21) and Compose v2 alike, a compose file read as YAML and then
interpolated (``$`` is Compose's), SQL, a MariaDB option file, JSON. Each writer here
either returns text that every reader of that format turns back into exactly the value,
or raises :class:`Unrepresentable` saying why; each ``*_problem`` function says the same
without raising, so ``fab check`` refuses, with the value's file:line, exactly what a
renderer would refuse later (never more, never less: both call the same predicates).

What the env file can carry, and why (checked against the real readers in
``tests/unit/test_formats.py``; Compose v2 only from its documentation, untested here):

- ``[A-Za-z0-9_./:@+,=%-]*`` is written bare: every reader takes it as it is.
- Otherwise, with no ``'`` and no ``\\``, it is single-quoted: literal for systemd and
  for Compose v2; python-dotenv decodes ``\\\\`` and ``\\'`` there (hence no backslash).
- Otherwise (a ``'`` or ``\\`` in it), with no ``$`` in it, double-quoted with ``\\`` and
  ``"`` escaped: systemd, python-dotenv and Compose v2 all decode exactly those two.
  A ``$`` there would be expanded by Compose v2 (``$X``), and ``\\$`` is read as ``\\$``
  by python-dotenv but as ``$`` by systemd: no spelling fits all three, so a value with
  ``$`` and a quote or backslash is refused.
- ``${`` is refused anywhere: Compose v1 expands ``${NAME}`` in env files even inside
  single quotes, and has no escape for it.
- Control characters (newline, tab, NUL, ...), line separators and text that is not
  valid Unicode are refused everywhere: none of the formats carries them the same way.
"""

from __future__ import annotations

import re
import unicodedata

#: Values an env file holds bare, for systemd (EnvironmentFile=) and Compose alike.
ENV_PLAIN = re.compile(r"^[A-Za-z0-9_./:@+,=%-]*$")
ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

#: PostgreSQL truncates identifiers to NAMEDATALEN-1 bytes.
PG_NAME_BYTES = 63
#: MariaDB/MySQL database names are at most 64 characters (the backup's scratch twin is cut
#: to fit by ``relaunch.databases.mariadb.scratch_name``).
MARIADB_DATABASE_CHARS = 64
MARIADB_USER_CHARS = 80
MYSQL_USER_CHARS = 32


class Unrepresentable(ValueError):
    """A value that a format cannot carry unchanged; the message says why (never the value)."""


def text_problem(value: str) -> str | None:
    """Why ``value`` cannot go into any file relaunch writes, or None.

    Refused: text that is not valid Unicode (e.g. from an environment variable holding
    bytes that are not UTF-8), control characters (Unicode category Cc: NUL, tab,
    newline, DEL, ...), line and paragraph separators.
    """
    for ch in value:
        cat = unicodedata.category(ch)
        if cat == "Cs":
            return "is not valid UTF-8 text"
        if cat == "Cc" or cat in ("Zl", "Zp"):
            return f"holds a control character ({_codepoint(ch)}); only printable text is carried"
    return None


def _codepoint(ch: str) -> str:
    return f"U+{ord(ch):04X}"


# --- env files (systemd EnvironmentFile=, Compose env_file: and --env-file) -------------


def env_key_problem(key: str) -> str | None:
    """Why ``key`` is not an environment variable name every reader accepts, or None."""
    if not ENV_KEY.match(key):
        return "is not an environment variable name (letters, digits and '_', not starting with a digit)"
    return None


def env_value_problem(value: str) -> str | None:
    """Why ``value`` cannot be written to an env file that every reader reads back unchanged, or None."""
    problem = text_problem(value)
    if problem:
        return problem
    if "${" in value:
        return "holds '${', which Compose v1 expands in env files even inside quotes (and has no escape for)"
    if value.endswith("\\"):
        # written "...\\" it ends in an escaped backslash before the closing quote: Compose v1's
        # python-dotenv then fails to parse the line and every line after it
        return "ends with a backslash, which Compose v1's env-file reader misreads (with the lines after it)"
    if ("'" in value or "\\" in value) and "$" in value:
        return (
            "holds '$' together with a quote or backslash: no env-file spelling is read alike by systemd, "
            "Compose v1 and Compose v2"
        )
    return None


def env_assignment(key: str, value: str) -> str:
    """Return the line ``KEY=value`` (value quoted as the module docstring says). Raise Unrepresentable."""
    problem = env_key_problem(key)
    if problem:
        raise Unrepresentable(f"name {key!r} {problem}")
    problem = env_value_problem(value)
    if problem:
        raise Unrepresentable(f"the value {problem}")
    if ENV_PLAIN.match(value):
        return f"{key}={value}"
    if "'" not in value and "\\" not in value:
        return f"{key}='{value}'"
    return f'{key}="' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


# --- compose files (YAML, then Compose's interpolation) --------------------------------

_YAML_ESCAPES = {"\\": "\\\\", '"': '\\"', "\0": "\\0", "\a": "\\a", "\b": "\\b", "\t": "\\t", "\n": "\\n",
                 "\v": "\\v", "\f": "\\f", "\r": "\\r", "\x1b": "\\e", "\x85": "\\N",
                 "\u2028": "\\L", "\u2029": "\\P"}


def _yaml_printable(ch: str) -> bool:
    # YAML 1.1/1.2 c-printable, minus what a double-quoted scalar folds (line breaks) or a reader may drop (BOM)
    o = ord(ch)
    return (0x20 <= o <= 0x7E or 0xA0 <= o <= 0xD7FF or 0xE000 <= o <= 0xFFFD and o != 0xFEFF) or o >= 0x10000


def yaml_string(value: str) -> str:
    """Return ``value`` as a YAML double-quoted scalar that any YAML loader reads back unchanged."""
    out = []
    for ch in value:
        if ch in _YAML_ESCAPES:
            out.append(_YAML_ESCAPES[ch])
        elif _yaml_printable(ch):
            out.append(ch)
        elif ord(ch) <= 0xFF:
            out.append(f"\\x{ord(ch):02X}")
        elif ord(ch) <= 0xFFFF:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(f"\\U{ord(ch):08X}")
    return '"' + "".join(out) + '"'


def compose_string(value: str) -> str:
    """Return ``value`` as a scalar of a compose file: YAML double-quoted, every ``$`` written ``$$``.

    Compose (v1 and v2) interpolates ``$NAME`` and ``${NAME}`` in every string of the file
    after YAML parsing; ``$$`` is its escape for one literal ``$``. Raise Unrepresentable for
    text no file can carry (see :func:`text_problem`).
    """
    problem = text_problem(value)
    if problem:
        raise Unrepresentable(f"the value {problem}")
    return yaml_string(value.replace("$", "$$"))


# --- MariaDB/MySQL option files ---------------------------------------------------------


def option_file_value(value: str) -> str:
    """Return ``value`` for ``key=<here>`` in a MariaDB/MySQL option file: double-quoted, ``\\`` and ``"`` escaped.

    The client strips the quotes and decodes ``\\\\`` and ``\\"`` (and keeps ``#`` inside
    quotes). Raise Unrepresentable for text no file can carry.
    """
    problem = text_problem(value)
    if problem:
        raise Unrepresentable(f"the value {problem}")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


# --- names on database servers -----------------------------------------------------------


def sql_name_problem(value: str, engine: str, what: str) -> str | None:
    """Why ``value`` cannot be the ``what`` (``database`` or ``user``) name on an ``engine`` server unchanged, or None.

    Every name is sent quoted (identifier or string), so any printable text works, within
    each server's limits: PostgreSQL keeps 63 bytes of a name (and cuts the rest silently);
    MariaDB/MySQL names hold no character beyond U+FFFF, database names at most 64
    characters, users at most 80 (MariaDB) or 32 (MySQL) characters. Leading or trailing
    whitespace is refused for all (option files strip it).
    """
    problem = text_problem(value)
    if problem:
        return problem
    if value == "":
        return "is empty"
    if value != value.strip():
        return "starts or ends with whitespace"
    if engine == "postgresql":
        if len(value.encode()) > PG_NAME_BYTES:
            return f"is {len(value.encode())} bytes long; PostgreSQL keeps only {PG_NAME_BYTES}"
        return None
    if any(ord(ch) > 0xFFFF for ch in value):
        return "holds a character beyond U+FFFF, which MariaDB/MySQL names cannot hold"
    limit = MARIADB_DATABASE_CHARS if what == "database" else (MYSQL_USER_CHARS if engine == "mysql" else MARIADB_USER_CHARS)
    if len(value) > limit:
        return f"is {len(value)} characters long; at most {limit} for a {engine} {what} name"
    return None


def systemd_exec_word(value: str) -> str:
    """Return one word of a unit's ``ExecStart=`` (systemd.service(5), "Command lines"), as systemd reads it back.

    Double-quoted, ``\\`` and ``"`` escaped; ``%`` (a specifier) written ``%%`` and ``$`` (an
    environment variable) ``$$``, so the word reaches the program exactly as written.
    Raise Unrepresentable for control characters (a unit file is line based).
    """
    problem = text_problem(value)
    if problem:
        raise Unrepresentable(f"a command word for systemd: this {problem}")
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%").replace("$", "$$")
    return f'"{escaped}"'
