"""Draft the inventory and runbook additions for what ``fab drift`` found, to review before adopting.

:func:`draft` returns two texts from a drift's findings: YAML additions to the inventory
(apps' ``files``, databases, Compose apps, domains, ``drift.ignore`` candidates) and a
Markdown runbook for the site with tagged steps (```` ```sh {step=NAME} ````), each idempotent
and saying ``relaunch: changed`` when it changed something, like ``runbooks/*.md``. Both are
marked as drafts: they say what production really has, not that it is right.

Secrets never go into a draft. A value the collector saw as secret never left the host (a
container's ``*PASSWORD*`` variables, env files in the app trees: names only; files others
may not read: no content); the draft names a secret reference (``file:../secrets/<site>/...``)
and says where the value lives on production, to be copied there by hand.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from relaunch.drift.compare import Finding
from relaunch.images import is_by_tag
from relaunch.state import make_private_dirs, write_atomic

_STEP = re.compile(r"[^a-z0-9-]+")


@dataclass
class Draft:
    inventory_yaml: str
    runbook_md: str

    def write(self, directory: Path) -> tuple[Path, Path]:
        """Write both (0600, the directory 0700); return their paths."""
        make_private_dirs(directory)
        yml, md = directory / "inventory-additions.yml", directory / "runbook-additions.md"
        write_atomic(yml, self.inventory_yaml.encode(), 0o600)
        write_atomic(md, self.runbook_md.encode(), 0o600)
        return yml, md


def _step_name(text: str) -> str:
    return _STEP.sub("-", text.lower()).strip("-")[:50] or "step"


def _secret_ref(site: str, *parts: str) -> str:
    return "file:../secrets/" + "/".join([site, "-".join(_step_name(p) for p in parts)])


def draft(site: str, findings: Sequence[Finding], production: str) -> Draft:
    """The draft additions for ``findings`` of ``site`` (found on ``production``)."""
    return Draft(_inventory(site, findings, production), _runbook(site, findings, production))


# --- inventory --------------------------------------------------------------------------------


def _inventory(site: str, findings: Sequence[Finding], production: str) -> str:
    files: dict[str, list[str]] = {}
    databases: list[dict[str, Any]] = []
    apps: list[dict[str, Any]] = []
    notes: list[str] = []
    for f in findings:
        if f.kind == "file" and f.change == "extra":
            app = str(f.data.get("app_tree", "")).rsplit("/", 1)[-1]
            if f.data.get("directory"):
                files.setdefault(app, []).append(f.subject)
            else:
                # a files entry is a tree: backups archive, rebuilds copy and verify directories, never a lone file
                notes.append(f"{f.subject} is a lone file in the app's tree: relaunch carries directories (each "
                             f"`files` entry is one), so move it into a directory of the app's files (or a new one, "
                             f"e.g. {f.data.get('app_tree')}/data/, listed there), or make it a template if it is "
                             "configuration")
            if f.data.get("env_keys") or f.data.get("secret"):
                what = ", ".join(f.data.get("env_keys") or []) or "not readable by others"
                notes.append(f"{f.subject} may hold secrets ({what}): as part of files it is carried as data; if it "
                             "is configuration instead, render it from a template with secret_env references")
        elif f.kind == "database":
            server = str(f.data.get("server", ""))
            name = str(f.data.get("name"))
            entry: dict[str, Any] = {"name": _step_name(name), "engine": f.data.get("engine") or "TODO"}
            if server.startswith("container "):
                entry["runs"] = {"app": "TODO", "service": "TODO"}
                notes.append(f"database {name} runs in {server}: give the app and Compose service it belongs to")
            else:
                entry["runs"] = "native"
            entry.update(database=name, user="TODO",
                         password=_secret_ref(site, name, "db-password"))
            notes.append(f"the password of database {name}'s user lives on production (the app's configuration); "
                         f"copy it into {entry['password'][5:]} (mode 0600) by hand")
            databases.append(entry)
        elif f.kind in ("container", "project") and f.change == "extra":
            apps.append(_compose_app(site, f, notes))
        elif f.kind == "server_name":
            apps.append({"name": "TODO", "kind": "TODO (compose or systemd)", "domain": f.subject, "port": "TODO",
                         "health": [{"path": "/"}], "files": []})
            notes.append(f"server name {f.subject} is served by {f.data.get('file')}: say which app it is")
    doc: dict[str, Any] = {}
    if files:
        doc["files_to_add"] = {app: sorted(paths) for app, paths in files.items()}
    if apps:
        doc["apps"] = apps
    if databases:
        doc["databases"] = databases
    header = [
        f"# DRAFT inventory additions for site {site}, from `fab drift --draft` against production {production}.",
        "# Review before adopting: this is what production really has, not a judgement that it is right.",
        "# Merge by hand into inventory/<site>.yml: files_to_add lists paths for each app's `files`; apps and",
        "# databases are entries to complete (TODO) and append. No secret value is in this file: secret",
        "# references name files for you to fill in from where the value lives on production (see the notes).",
    ]
    body = yaml.safe_dump(doc, sort_keys=False, default_flow_style=False) if doc else "{}\n"
    tail = ["", "# Notes:"] + [f"# - {n}" for n in notes] if notes else []
    if not doc and not notes:
        tail = ["# Nothing for the inventory: the findings are for the runbooks (see runbook-additions.md)."]
    return "\n".join(header) + "\n" + body + ("\n".join(tail) + "\n" if tail else "")


def _repository(image: str) -> str:
    """``registry:5000/example/blog@sha256:..`` or ``example/blog:1.2`` -> the repository, without tag or digest."""
    name = image.split("@", 1)[0]
    head, _, last = name.rpartition("/")
    return (f"{head}/" if head else "") + last.split(":", 1)[0]


def _inventory_image(data: dict[str, Any]) -> str:
    """What the inventory names for a container's image: a public image by its tag, else the repository."""
    image = str(data.get("image") or "TODO")
    if image.startswith("sha256:"):  # run by image id: its repository from the digest it was pulled by
        image = (data.get("digests") or ["TODO"])[0]
    if "@" not in image and is_by_tag(image):
        return image  # e.g. docker.io/library/wordpress:6.4: resolved to a digest when deployed
    return _repository(image)


def _compose_app(site: str, f: Finding, notes: list[str]) -> dict[str, Any]:
    services = dict(f.data.get("services") or {}) or {f.data.get("service") or f.subject: f.data}
    env: dict[str, str] = {}
    secret_names: list[str] = []
    for svc in services.values():
        env.update(svc.get("env") or {})
    for svc in services.values():
        secret_names += [n for n in svc.get("env_names") or [] if n not in env and n not in secret_names]
    name = _step_name(f.subject if f.kind == "project" else (f.data.get("project") or f.subject))
    images = {str(service): _inventory_image(svc) for service, svc in sorted(services.items())}
    app: dict[str, Any] = {
        "name": name, "kind": "compose", "domain": "TODO", "port": "TODO", "files": [],
        "health": [{"path": "/"}],
        "compose": {"template": f"apps/{name}/compose.yml.j2", "images": images},
    }
    if env:
        app["env"] = {k: v for k, v in env.items() if not k.startswith(("PATH", "HOME", "HOSTNAME", "LANG", "GPG_"))}
    if secret_names:
        app["secret_env"] = {n: _secret_ref(site, name, n) for n in secret_names}
        notes.append(f"{f.kind} {f.subject}: the values of {', '.join(secret_names)} live in its environment on "
                     f"production (docker inspect {f.subject if f.kind == 'container' else '<container>'}); copy each "
                     "into the file its secret reference names (mode 0600)")
    mounts = [m for svc in services.values() for m in svc.get("mounts") or [] if m.startswith("bind:")]
    if mounts:
        notes.append(f"{f.kind} {f.subject} mounts {', '.join(m.split(':')[1] for m in mounts)}: add the data trees "
                     "to the app's files")
    notes.append(f"{f.kind} {f.subject}: write templates/apps/{name}/compose.yml.j2 from its compose file "
                 f"({f.data.get('config_files') or 'docker inspect'}) and complete domain, port and health")
    return app


# --- runbook ----------------------------------------------------------------------------------


def _runbook(site: str, findings: Sequence[Finding], production: str) -> str:
    out = [f"# DRAFT — additions for the runbooks of {site}", "",
           f"Made by `fab drift --draft` from what production ({production}) runs and a rebuild does not. "
           "**Review every step before adopting it**: a step that installs something is a decision to keep it. "
           "Each block is idempotent and prints `relaunch: changed` when it changed something. No secret is "
           "written here: where a step needs one, it reads a file relaunch puts on the host.", ""]
    pkgs = [f for f in findings if f.kind == "package" and f.subject != "(dependencies)"]
    if pkgs:
        names = " ".join(shlex.quote(f.subject) for f in pkgs)
        out += ["## Packages installed by hand", "",
                *[f"- {f.subject} {f.data.get('version') or ''}" + (f" (with {len(f.related)} thing(s) it brought)"
                                                                    if f.related else "") for f in pkgs], "",
                "```sh {step=drift-packages}",
                "missing=()",
                f"for pkg in {names}; do",
                "  status=$(dpkg-query -W -f='${db:Status-Status}' \"$pkg\" 2>/dev/null) || status=absent",
                "  [ \"$status\" = installed ] || missing+=(\"$pkg\")",
                "done",
                "if [ \"${#missing[@]}\" -gt 0 ]; then",
                "  apt-get install -y -q \"${missing[@]}\"",
                "  echo \"relaunch: changed\"",
                "fi", "```", ""]
    etc = [f for f in findings if f.kind == "etc"]
    if etc:
        out += ["## Files under /etc", "",
                "Their content is not in this draft (relaunch compared checksums only). Copy each from production "
                f"into the site's templates (e.g. `scp root@HOST:/etc/... templates/{site}/etc/...`), review it, "
                "and let the bootstrap upload it; a file others may not read holds secrets: make its secret parts "
                "secret references instead.", ""]
        for f in etc:
            out.append(f"- `{f.subject}` ({f.change}): {f.detail}")
        out.append("")
    units = [f for f in findings if f.kind == "unit"]
    if units:
        out += ["## Units and timers", "",
                "Copy the unit files from production into the site's templates (they are uploaded to "
                "/etc/systemd/system by the bootstrap), then enable them:", ""]
        for f in units:
            out.append(f"- `{f.subject}`: {f.detail}" + (f" (with {', '.join(f.related)})" if f.related else ""))
        enable = " ".join(shlex.quote(f.subject) for f in units if f.change == "extra")
        if enable:
            out += ["", "```sh {step=drift-units}",
                    f"for unit in {enable}; do",
                    "  if ! systemctl is-enabled --quiet \"$unit\"; then",
                    "    systemctl enable --now \"$unit\"",
                    "    echo \"relaunch: changed\"",
                    "  fi",
                    "done", "```"]
        out.append("")
    cron = [f for f in findings if f.kind == "cron"]
    if cron:
        out += ["## Cron jobs", "", "Better as systemd timers; as they are:", "", "```sh {step=drift-cron}"]
        for i, f in enumerate(cron):
            source, entry = str(f.data.get("source")), str(f.data.get("entry"))
            if source.startswith("/var/spool/cron/crontabs/"):
                user = source.rsplit("/", 1)[-1]
                out += [f"line={shlex.quote(entry)}",
                        f"if ! crontab -u {shlex.quote(user)} -l 2>/dev/null | grep -qxF -- \"$line\"; then",
                        f"  {{ crontab -u {shlex.quote(user)} -l 2>/dev/null || true; echo \"$line\"; }} | "
                        f"crontab -u {shlex.quote(user)} -",
                        "  echo \"relaunch: changed\"", "fi"]
            elif source.startswith("/etc/cron.d/") or source == "/etc/crontab":
                out += [f"line={shlex.quote(entry)}", f"file={shlex.quote(source)}",
                        "if ! grep -qxF -- \"$line\" \"$file\" 2>/dev/null; then",
                        "  echo \"$line\" >> \"$file\"", "  echo \"relaunch: changed\"", "fi"]
            else:
                out.append(f"# {source}: {entry} (copy the script from production into the site's templates)")
        out += ["```", ""]
    rest = [f for f in findings if f.kind in ("port", "image", "volume", "user")]
    if rest:
        out += ["## Also found (describe or remove)", ""]
        for f in rest:
            out.append(f"- {f.kind} `{f.subject}`: {f.detail} — {f.advice}")
        out.append("")
    inv = [f for f in findings if f.kind in ("file", "database", "container", "project", "server_name")]
    if inv:
        out += ["## For the inventory", "", "See `inventory-additions.yml` beside this file for:", ""]
        out += [f"- {f.kind} `{f.subject}`: {f.detail}" for f in inv]
        out.append("")
    if len(out) <= 6:
        out += ["Nothing to add: production has nothing the inventory and runbooks do not describe.", ""]
    return "\n".join(out)
