"""Runbooks: Markdown setup notes a person can read during an outage, whose tagged shell blocks are the bootstrap.

A fenced block whose info string is ``sh {step=NAME}`` or ``bash {step=NAME}`` (fence of
backticks or tildes) is a *step*: rendered with the inventory (Jinja, StrictUndefined)
and run on the host in file-name order, then document order. Any other block, and all
prose, is documentation only.

Two sets of runbooks make a site's notes: relaunch's own (``runbooks/*.md``) and the
site's (``sites/<site>/runbooks/NN-name.md``, or the inventory's ``runbooks:``), merged by
their number prefix, relaunch's first on a tie: a site's ``25-wiki.md`` runs after the
databases (20) and before the apps start (30). A step that initialises data (an app's
one-time installer) is tagged ``{step=NAME when=fresh}``: it runs only when a new site is
set up (``fab sandbox-up``), never in a rebuild or a drill, which restore the data instead
(it must still be idempotent: ``fab sandbox-up`` again runs it on the same host); runbooks
can also test ``{% if fresh_site %}``.

A runbook is rendered as a whole, then its steps are taken from the result, so Jinja
may wrap whole sections (``{% if %}``). Every ``{{ value }}`` is shell-quoted
(``shlex.quote``; plain names, paths and numbers come out unchanged) unless it went
through a filter that produces shell-ready text (``quote``, ``words`` for a list,
``verbatim`` for prose). The SQL filters (``mysql_ident``, ``mysql_string``,
``pg_ident``, ``pg_string``) give SQL text, ``mysql_option`` a MariaDB option-file
value (double-quoted, escaped), then shell-quoted like any value. Jinja
comments are ``{## ... ##}`` here (``{#`` is bash's ``${#array[@]}``). Runbooks never see a secret value:
they read secrets on the host, from the 0600 files under /etc/relaunch/.

Conventions of a step: idempotent (a second run changes nothing), and it prints the line
``relaunch: changed`` when, and only when, it changed the system.
"""

from __future__ import annotations

import io
import logging
import re
import shlex
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from dataclasses import replace as dataclass_replace
from pathlib import Path
from typing import Any, Literal

import jinja2
from fabric import Connection
from invoke.exceptions import CommandTimedOut

from relaunch import formats, render
from relaunch.errors import RelaunchError

log = logging.getLogger(__name__)

RUNBOOKS_DIR = Path(__file__).resolve().parents[2] / "runbooks"
CHANGED_MARKER = "relaunch: changed"
SHELLS = ("sh", "bash")
TAIL_LINES = 30

_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_INFO = re.compile(r"^\s*(?P<lang>[^\s{]+)?\s*(?:\{(?P<attrs>[^}]*)\})?\s*$")
_ATTR = re.compile(r"^(?P<key>[A-Za-z][A-Za-z0-9_-]*)=(?P<value>\S+)$")
_STEP_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")

# The script travels on stdin into a root-only temp file (mktemp makes it 0600), so it is in
# no process's argv and the commands it runs cannot swallow the rest of it from stdin.
_RUNNER = (
    'f=$(mktemp /tmp/relaunch-step.XXXXXX) || exit 125; '
    'cat >"$f" || { rm -f "$f"; exit 125; }; '
    'DEBIAN_FRONTEND=noninteractive bash -euo pipefail "$f" </dev/null; rc=$?; rm -f "$f"; exit $rc'
)


class RunbookError(RelaunchError):
    """A runbook could not be parsed, rendered or run (message names the file, line and step)."""

    def __init__(self, message: str, step: Step | None = None, output: str = "") -> None:
        super().__init__(message)
        self.step = step
        self.output = output


# --- parsing ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    """A piece of a runbook: prose (``text``) or a fenced ``code`` block (body without fences)."""

    kind: Literal["text", "code"]
    body: str
    line: int  # 1-based line of the text, or of the opening fence
    info: str = ""
    fence: str = ""
    step: str | None = None
    fresh_only: bool = False

    @property
    def body_line(self) -> int:
        """Line of the first line of ``body`` in the file."""
        return self.line + 1 if self.kind == "code" else self.line


def parse(text: str, file: str) -> list[Segment]:
    """Split Markdown ``text`` into prose and fenced code segments, in order.

    A fence is 3+ backticks or tildes (indented 0-3 spaces); it closes at a line with the
    same character, at least as many, and nothing else. A block tagged ``{step=NAME}``
    must be ``sh`` or ``bash``. Raise RunbookError naming ``file`` and the line for an
    unterminated fence, a malformed tag, or a step tag on another language.
    """
    segments: list[Segment] = []
    lines = text.splitlines(keepends=True)
    prose: list[str] = []
    prose_start = 1
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i].rstrip("\n"))
        if match is None or (match["fence"][0] == "`" and "`" in match["info"]):
            prose.append(lines[i])
            i += 1
            continue
        if prose:
            segments.append(Segment("text", "".join(prose), prose_start))
        opening, indent, info = match["fence"], len(match["indent"]), match["info"].strip()
        start = i + 1  # 1-based line of the opening fence
        step, fresh_only = _step_of(info, file, start)
        body: list[str] = []
        i += 1
        while True:
            if i >= len(lines):
                raise RunbookError(f"{file}:{start}: code block opened with {opening} is never closed")
            stripped = lines[i].rstrip("\n")
            close = re.match(r"^ {0,3}(`{3,}|~{3,})\s*$", stripped)
            if close and close[1][0] == opening[0] and len(close[1]) >= len(opening):
                break
            body.append(_dedent(lines[i], indent))
            i += 1
        segments.append(Segment("code", "".join(body), start, info=info, fence=opening, step=step, fresh_only=fresh_only))
        i += 1
        prose, prose_start = [], i + 1
    if prose:
        segments.append(Segment("text", "".join(prose), prose_start))
    return segments


def _dedent(line: str, indent: int) -> str:
    removable = len(line) - len(line.lstrip(" "))
    return line[min(indent, removable):]


#: The values of a step's ``when`` attribute: ``fresh`` runs only when a new site is set up.
WHEN = ("fresh",)


def _step_of(info: str, file: str, line: int) -> tuple[str | None, bool]:
    """Return the step name of a block's info string (None: not a step) and whether it runs on a fresh site only."""
    if "{" not in info:
        return None, False
    match = _INFO.match(info)
    if match is None:
        raise RunbookError(f"{file}:{line}: cannot read the code block's info string {info!r} (expected e.g. 'sh {{step=docker}}')")
    attrs: dict[str, str] = {}
    for word in (match["attrs"] or "").split():
        attr = _ATTR.match(word)
        if attr is None:
            raise RunbookError(f"{file}:{line}: malformed attribute {word!r} in {info!r} (expected key=value)")
        attrs[attr["key"]] = attr["value"]
    unknown = set(attrs) - {"step", "when"}
    if unknown:
        raise RunbookError(f"{file}:{line}: unknown attribute(s) {', '.join(sorted(unknown))} in {info!r} (only 'step' and 'when')")
    name = attrs.get("step")
    if name is None:
        if "when" in attrs:
            raise RunbookError(f"{file}:{line}: 'when' without 'step' in {info!r} (e.g. 'sh {{step=install when=fresh}}')")
        return None, False
    if match["lang"] not in SHELLS:
        raise RunbookError(f"{file}:{line}: step {name!r} must be a sh or bash block, not {match['lang'] or 'untyped'}")
    if not _STEP_NAME.match(name):
        raise RunbookError(f"{file}:{line}: step name {name!r}: lowercase letters, digits, '.', '_' and '-'")
    when = attrs.get("when")
    if when is not None and when not in WHEN:
        raise RunbookError(f"{file}:{line}: step {name!r}: when={when!r}; the one value is 'fresh' "
                           "(run only when a new site is set up, never in a rebuild or drill)")
    return name, when == "fresh"


# --- rendering --------------------------------------------------------------------------


class ShellText(str):
    """Text already fit for the shell; a step's ``{{ }}`` leaves it as it is."""


def _shell_finalize(value: Any) -> str:
    if isinstance(value, ShellText):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return shlex.quote(str(value))


def _words(values: Iterable[Any]) -> ShellText:
    return ShellText(" ".join(shlex.quote(str(v)) for v in values))


def _mysql_ident(value: str) -> str:
    return "`" + str(value).replace("`", "``") + "`"


def _mysql_string(value: str) -> str:
    return "'" + str(value).replace("\\", "\\\\").replace("'", "''") + "'"


def _mysql_grant_db(value: str) -> str:
    """A database name as GRANT ... ON `db`.* reads it: a pattern, where ``_`` and ``%`` are wildcards and ``\\``
    escapes (MariaDB's GRANT docs); escaped, it names exactly the one database, backslashes and all."""
    return _mysql_ident(str(value).replace("\\", "\\\\").replace("_", "\\_").replace("%", "\\%"))


def _pg_ident(value: str) -> str:
    return '"' + str(value).replace('"', '""') + '"'


def _pg_string(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def _environment(ctx: render.RenderContext) -> jinja2.Environment:
    # bash's ${#array[@]} would open a Jinja comment: runbooks comment with {## ... ##}
    env = render.environment(
        ctx.templates_dir, finalize=_shell_finalize, comment_start_string="{##", comment_end_string="##}"
    )
    env.filters.update(quote=lambda v: ShellText(shlex.quote(str(v))), words=_words, verbatim=ShellText)
    env.filters.update(mysql_ident=_mysql_ident, mysql_grant_db=_mysql_grant_db, mysql_string=_mysql_string,
                       pg_ident=_pg_ident, pg_string=_pg_string, mysql_option=formats.option_file_value)
    return env


def runbook_values(ctx: render.RenderContext) -> dict[str, Any]:
    """Return the Jinja context of runbooks: the inventory and paths, never a secret value."""
    inv = ctx.inventory
    return {
        "inventory": inv,
        "images": {app: dict(services) for app, services in ctx.images.items()},
        "sandbox": ctx.sandbox,
        "base_packages": list(render.BASE_PACKAGES),
        "relaunch_dir": render.RELAUNCH_DIR,
        "secrets_dir": render.SECRETS_DIR,
        "tls_certificate": render.TLS_CERTIFICATE,
        "tls_key": render.TLS_KEY,
        "env_files": {a.name: render.env_file_path(a.name) for a in inv.apps},
        "password_files": {d.name: render.password_file_path(d.name) for d in inv.databases if d.engine != "sqlite"},
        "app_files": render.app_host_paths(ctx),
        "compose_apps": [a for a in inv.apps if a.kind == "compose"],
        "systemd_apps": [a for a in inv.apps if a.kind == "systemd"],
        "native_databases": [d for d in inv.databases if d.runs == "native"],
        "fresh_site": ctx.fresh_site,
    }


@dataclass(frozen=True)
class Step:
    """A rendered step: its name, the runbook file and line of its fence (in the source), the script.

    ``fresh_only``: tagged ``when=fresh`` (initialises data): run only when a new site is set up.
    """

    name: str
    file: str
    line: int
    script: str
    fresh_only: bool = False

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class Runbook:
    """One runbook file rendered for a site: the Markdown text and its steps."""

    file: str
    text: str
    steps: list[Step]
    label: str = ""  # how the merged document names it (runbooks/00-base.md, sites/wiki/runbooks/25-wiki.md)


_NUMBERED = re.compile(r"^(?P<number>[0-9]+)-[^/]*\.md$")


def runbook_files(runbooks_dir: Path) -> list[Path]:
    """Return the runbooks (``*.md``) in name order. Raise RunbookError if there are none."""
    files = sorted(runbooks_dir.glob("*.md"), key=lambda p: p.name)
    if not files:
        raise RunbookError(f"no runbooks (*.md) in {runbooks_dir}")
    return files


def site_runbook_files(runbooks_dir: Path) -> list[Path]:
    """Return a site's own runbooks (``NN-name.md``) in name order; none is fine.

    Raise RunbookError for a Markdown file without its number prefix (the number says where
    it runs among relaunch's own: 00 base, 10 Docker, 20 databases, 30 apps, 40 proxy).
    """
    files = sorted(runbooks_dir.glob("*.md"), key=lambda p: p.name)
    for path in files:
        if not _NUMBERED.match(path.name):
            raise RunbookError(
                f"{path}: a site's runbook is named NN-name.md, the number saying where it runs among relaunch's "
                "(00 base, 10 Docker, 20 databases, 30 apps, 40 proxy; e.g. 25-wiki.md runs after the databases, "
                "before the apps start)")
    return files


def merged_files(relaunch_dir: Path, site_dir: Path | None) -> list[tuple[Path, bool]]:
    """Return (file, is the site's own) for relaunch's runbooks and the site's, in the order they run.

    Ordered by number prefix, relaunch's before the site's on the same number (a file of
    relaunch's without a number sorts after the numbered ones, as by name). Without site
    runbooks: relaunch's in name order. Raise RunbookError as the two listings do.
    """
    ours = [(p, False) for p in runbook_files(relaunch_dir)]
    theirs = [(p, True) for p in site_runbook_files(site_dir)] if site_dir is not None else []
    if not theirs:
        return ours

    def key(item: tuple[Path, bool]) -> tuple[float, bool, str]:
        path, own = item
        match = _NUMBERED.match(path.name)
        return (int(match["number"]) if match else float("inf"), own, path.name)

    return sorted(ours + theirs, key=key)


def render_file(ctx: render.RenderContext, path: Path) -> Runbook:
    """Render one runbook file as a whole (Jinja may span blocks, e.g. ``{% if %}`` around a section).

    The source is parsed first (structure errors name source lines), then rendered, then
    the rendered text is parsed for its steps; a step's line is its fence in the source.
    Every ``{{ }}`` is shell-quoted, prose included (plain names, paths and numbers are
    left as they are; ``| verbatim`` for free text in prose). Raise RunbookError or RenderError.
    """
    source = path.read_text()
    source_lines: dict[str, int] = {}
    fresh: dict[str, bool] = {}
    for seg in parse(source, path.name):
        if seg.step is not None:
            source_lines.setdefault(seg.step, seg.line)
            fresh.setdefault(seg.step, seg.fresh_only)
    text = render.render_source(_environment(ctx), source, path.name, runbook_values(ctx))
    steps: list[Step] = []
    for seg in parse(text, f"{path.name} (rendered)"):
        if seg.step is None:
            continue
        if any(s.name == seg.step for s in steps):
            raise RunbookError(f"step {seg.step!r} is defined twice in {path.name} (a step inside a loop?)")
        steps.append(Step(seg.step, path.name, source_lines.get(seg.step, seg.line), seg.body,
                          fresh_only=seg.fresh_only or fresh.get(seg.step, False)))
    return Runbook(path.name, text, steps, label=f"runbooks/{path.name}")


def _label(path: Path) -> str:
    from relaunch.inventory import display_name

    return display_name(path)


def load_runbooks(ctx: render.RenderContext, runbooks_dir: Path | None = None) -> list[Runbook]:
    """Render relaunch's runbooks and the site's own, merged in the order they run (see :func:`merged_files`).

    ``runbooks_dir`` replaces relaunch's own (tests); the site's come from its inventory
    (``Inventory.own_dir("runbooks")``). Raise RunbookError for a step name used in two
    files (naming both).
    """
    books: list[Runbook] = []
    for path, own in merged_files(runbooks_dir or RUNBOOKS_DIR, ctx.inventory.own_dir("runbooks")):
        book = render_file(ctx, path)
        if own:
            label = _label(path)
            book = Runbook(label, book.text, [dataclass_replace(s, file=label) for s in book.steps], label=label)
        books.append(book)
    seen: dict[str, Step] = {}
    for book in books:
        for step in book.steps:
            if step.name in seen:
                raise RunbookError(f"step {step.name!r} is defined twice: {seen[step.name].where} and {step.where}")
            seen[step.name] = step
    return books


def load_steps(ctx: render.RenderContext, runbooks_dir: Path | None = None) -> list[Step]:
    """Return the rendered steps of every runbook, in the order they run, the ``when=fresh`` ones included.

    Raise RunbookError for a parse error or a step name used twice (naming both places),
    RenderError (naming file:line and the undefined name) for a missing value.
    """
    return [step for book in load_runbooks(ctx, runbooks_dir) for step in book.steps]


def steps_to_run(steps: list[Step], fresh_site: bool) -> tuple[list[Step], list[Step]]:
    """Split ``steps`` into (to run, skipped): ``when=fresh`` steps run only on a fresh site."""
    run = [s for s in steps if fresh_site or not s.fresh_only]
    return run, [s for s in steps if not (fresh_site or not s.fresh_only)]


def render_runbook(ctx: render.RenderContext, runbooks_dir: Path | None = None) -> str:
    """Return all runbooks rendered as one Markdown document, for doing the rebuild by hand.

    The steps in it are exactly the scripts :func:`load_steps` returns (same errors).
    """
    books = load_runbooks(ctx, runbooks_dir)
    return "\n".join(f"<!-- {book.label or book.file} -->\n{book.text.rstrip()}\n" for book in books)


# --- running ----------------------------------------------------------------------------


@dataclass(frozen=True)
class StepResult:
    """How one step went: whether it changed the host, how long it took, its output."""

    step: Step
    changed: bool
    seconds: float
    output: str = field(repr=False)


@dataclass(frozen=True)
class RunbookResult:
    """The steps that ran, in order (all succeeded: a failure raises RunbookError)."""

    steps: list[StepResult]

    @property
    def changed(self) -> list[str]:
        return [r.step.name for r in self.steps if r.changed]

    @property
    def seconds(self) -> float:
        return sum(r.seconds for r in self.steps)


Progress = Callable[[Step, StepResult | None], None]


def run_steps(
    conn: Connection, steps: list[Step], progress: Progress | None = None, *, timeout: float = 1800
) -> RunbookResult:
    """Run ``steps`` in order on ``conn``'s host as root, each with ``bash -euo pipefail``.

    The script goes over stdin, never argv. ``progress(step, None)`` is called before a
    step and ``progress(step, result)`` after it. A step counts as changed when it printed
    a line ``relaunch: changed``. Stop at the first failing step and raise RunbookError
    naming it, its file:line and the tail of its output (also on timeout).
    """
    results: list[StepResult] = []
    for step in steps:
        if progress:
            progress(step, None)
        log.info("runbook step %s (%s)", step.name, step.where)
        started = time.monotonic()
        try:
            res = conn.run(_RUNNER, in_stream=_Script(step.script), hide=True, warn=True, pty=False, timeout=timeout)
        except CommandTimedOut as exc:
            output = _combined(exc.result.stdout, exc.result.stderr)
            raise RunbookError(
                f"step {step.name} ({step.where}) did not finish within {timeout:.0f} s\n{_tail(output)}",
                step, output,
            ) from None
        seconds = time.monotonic() - started
        output = _combined(res.stdout, res.stderr)
        if res.exited != 0:
            raise RunbookError(
                f"step {step.name} ({step.where}) failed with exit status {res.exited} after {seconds:.1f} s; "
                f"last lines of its output:\n{_tail(output)}",
                step, output,
            )
        changed = any(line.strip() == CHANGED_MARKER for line in res.stdout.splitlines())
        result = StepResult(step, changed, seconds, output)
        log.info("step %s: %s in %.1f s", step.name, "changed" if changed else "unchanged", seconds)
        results.append(result)
        if progress:
            progress(step, result)
    return RunbookResult(results)


class _Script(io.StringIO):
    """A script as stdin for invoke/Fabric's ``run``, handed over in large pieces.

    invoke reads a stream that is not a terminal one byte at a time with a 10 ms nap
    between reads (1.6 s for 160 bytes, one SSH packet per byte); returning more than
    asked is harmless to it (it forwards whatever ``read`` gives) and makes it one write.
    """

    def read(self, size: int | None = -1) -> str:
        return super().read(64 * 1024)


def _combined(stdout: str, stderr: str) -> str:
    return stdout + (("\n" if stdout and not stdout.endswith("\n") else "") + stderr if stderr else "")


def _tail(output: str, lines: int = TAIL_LINES) -> str:
    kept = output.rstrip("\n").splitlines()[-lines:]
    return "\n".join("    " + line for line in kept) if kept else "    (no output)"
