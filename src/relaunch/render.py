"""Render the files of a host from the inventory: cloud-init user-data, app files, env files, proxy.

Templates live in ``templates/`` (Jinja2, ``StrictUndefined``: a value the inventory does
not give is an error, never an empty string). Rendering is pure: it returns
:class:`RenderedFile` values (host path, bytes, mode, secret or not); putting them on a
host is ``relaunch.upload``'s job, writing them locally for a person to read is
:func:`write_local`'s.

Secrets reach exactly two kinds of file: the per-app env file
(``/etc/relaunch/<app>.env``) and the per-database password file
(``/etc/relaunch/secrets/<db>.password``), both 0600 and marked secret, the TLS key
(``/etc/relaunch/secrets/tls.key``, 0600) — plus the cloud-init user-data, which holds
the host's private key. App templates never see a
secret value: they are given the env file's path instead.

Every value is written for the language of the file it lands in (``relaunch.formats``):
env files quoted for systemd and Compose v1/v2 alike, compose files through the
``compose`` filter (YAML, ``$`` doubled for Compose's interpolation; ``tojson`` is refused
there), JSON through ``tojson``. A template states what it needs with ``fail("...")``.
Any error inside a template, whatever its kind, is a RenderError naming the template and line.
"""

from __future__ import annotations

import json
import os
import posixpath
import shlex
import stat
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import jinja2
import yaml

from relaunch import formats
from relaunch.errors import RelaunchError
from relaunch.images import in_registry, is_by_tag
from relaunch.inventory.model import App, Inventory
from relaunch.inventory.tls import CertificateError, read_certificate
from relaunch.remote import HostKey

#: The repository's templates/ (src/relaunch/render.py -> repo root).
TEMPLATES_DIR = Path(__file__).resolve().parents[2] / "templates"

#: Packages every host gets, from cloud-init and again (idempotently) from runbooks/00-base.md.
BASE_PACKAGES = ["ca-certificates", "curl", "gnupg", "rsync", "tzdata"]

#: Where relaunch keeps a host's own facts and secrets.
RELAUNCH_DIR = "/etc/relaunch"
SECRETS_DIR = "/etc/relaunch/secrets"
#: The certificate the proxy serves (public) and its key (secret), when the inventory has proxy.tls.
TLS_CERTIFICATE = "/etc/relaunch/tls/site.crt"
TLS_KEY = "/etc/relaunch/secrets/tls.key"
USER_DATA_TEMPLATE = "cloud-init/user-data.yml.j2"
NGINX_TEMPLATE = "nginx/site.conf.j2"
NGINX_DEFAULT_TEMPLATE = "nginx/default.conf.j2"
#: The unit of an app given by ``systemd.command``.
COMMAND_UNIT_TEMPLATE = "systemd/command.service.j2"
#: A PHP app's PHP-FPM (systemd.php_fpm): its unit and its pool configuration.
PHP_FPM_UNIT_TEMPLATE = "systemd/php-fpm.service.j2"
PHP_FPM_POOL_TEMPLATE = "php-fpm/pool.conf.j2"

_SKIP_PARTS = {"__pycache__", ".git"}


class RenderError(RelaunchError):
    """A template could not be rendered (missing value, syntax error, missing template)."""


class SecretLike(Protocol):
    """What ``relaunch.inventory.secrets.Secret`` offers: a masked value revealed on demand."""

    def reveal(self) -> str: ...


@dataclass(frozen=True)
class RenderedFile:
    """One file for the host: ``path`` absolute on the host, exact bytes, mode, secret or not."""

    path: str
    content: bytes
    mode: int
    secret: bool

    def __repr__(self) -> str:  # content stays out of logs and test failure output
        return f"RenderedFile({self.path!r}, {len(self.content)} bytes, mode={self.mode:o}, secret={self.secret})"


@dataclass
class RenderContext:
    """Everything rendering needs for one host.

    ``secrets`` maps a secret reference (``file:...``/``env:...``) to its resolved value
    (``relaunch.inventory.secrets.resolve_all``); it may be empty for runbooks, which never
    see secrets. ``images`` maps app name -> service -> image reference by digest.
    """

    inventory: Inventory
    secrets: Mapping[str, SecretLike] = field(default_factory=dict)
    images: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    sandbox: bool = False
    host_key: HostKey | None = None
    authorized_keys: list[str] = field(default_factory=list)
    hostname: str | None = None
    templates_dir: Path = TEMPLATES_DIR
    #: A new site being set up (``fab sandbox-up``): the runbook steps marked ``when=fresh`` (an app's one-time
    #: installer) run. False for a rebuild or drill, which restore the data instead.
    fresh_site: bool = False

    @property
    def template_dirs(self) -> list[Path]:
        """Where templates are looked up, first match wins: the site's own templates, then ``templates_dir``."""
        own = self.inventory.own_dir("templates")
        return [own, self.templates_dir] if own is not None else [self.templates_dir]

    def __repr__(self) -> str:
        return f"RenderContext(site={self.inventory.site!r}, sandbox={self.sandbox}, secrets={len(self.secrets)} hidden)"


# --- the Jinja environment -------------------------------------------------------------


def environment(templates_dir: Path | Sequence[Path], *, finalize: Any = None, **options: Any) -> jinja2.Environment:
    """Return the Jinja environment over ``templates_dir``: strict, no autoescape, newline kept.

    ``templates_dir`` may be a list of directories, searched in order (a site's own first,
    so its file of the same path wins over relaunch's). ``options`` go to ``jinja2.Environment``
    (e.g. other comment delimiters).
    """
    dirs = [templates_dir] if isinstance(templates_dir, Path | str) else list(templates_dir)
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader([str(d) for d in dirs]),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,  # a line holding only {% if %} leaves no blank line (as in Ansible)
        lstrip_blocks=True,
        autoescape=False,
        finalize=finalize,
        **options,
    )
    env.filters["quote"] = lambda value: shlex.quote(str(_defined(value)))
    env.filters["tojson"] = _tojson
    env.filters["compose"] = _compose
    env.filters["systemd_word"] = lambda value: formats.systemd_exec_word(str(_defined(value)))
    env.globals["fail"] = _template_fail
    return env


class TemplateFailed(Exception):
    """Raised by ``fail("message")`` in a template: what the template needs and did not get."""


def _template_fail(message: str) -> None:
    raise TemplateFailed(str(message))


def _defined(value: Any) -> Any:
    """``value`` itself; for an undefined one, StrictUndefined's own error (the name that is missing)."""
    if isinstance(value, jinja2.Undefined):
        value._fail_with_undefined_error()
    return value


def _tojson(value: Any) -> str:
    return json.dumps(_defined(value), ensure_ascii=False)


def _compose(value: Any) -> str:
    """A value for a compose file: a number or boolean as it is, anything else a compose string."""
    value = _defined(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    return formats.compose_string(str(value))


def _no_tojson(value: Any) -> str:
    raise TemplateFailed("use '| compose' in a compose file, not '| tojson' (Compose expands '$' in it)")


def compose_environment(templates_dir: Path | Sequence[Path]) -> jinja2.Environment:
    """The environment of compose file templates: ``tojson`` refused (it leaves ``$`` to Compose's interpolation)."""
    env = environment(templates_dir)
    env.filters["tojson"] = _no_tojson
    return env


def _failure(exc: BaseException) -> str:
    if isinstance(exc, jinja2.TemplateError):
        return exc.message or exc.__class__.__name__
    if isinstance(exc, TemplateFailed | formats.Unrepresentable):
        return str(exc)
    return f"{exc.__class__.__name__}: {exc}"


def error_line(exc: BaseException, filename: str) -> int | None:
    """Return the template line an exception was raised at (Jinja maps template frames to lines)."""
    line = getattr(exc, "lineno", None)
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == filename:
            line = frame.lineno
    return line


def render_source(env: jinja2.Environment, source: str, name: str, values: Mapping[str, Any], *, first_line: int = 1) -> str:
    """Render template text ``source`` named ``name`` (for messages); line numbers start at ``first_line``.

    Raise RenderError naming ``name``, the line and Jinja's message (e.g. "'x' is undefined").
    """
    try:
        code = env.compile(source, name=name, filename=name)
        template = env.template_class.from_code(env, code, env.make_globals(None), None)
        return template.render(**values)
    except Exception as exc:  # noqa: BLE001 - whatever a template raises is that template's error
        line = error_line(exc, name)
        where = f"{name}:{line + first_line - 1}" if line else name
        raise RenderError(f"{where}: {_failure(exc)}") from None


def render_template(env: jinja2.Environment, name: str, values: Mapping[str, Any]) -> str:
    """Render the file template ``name`` (relative to the environment's directory).

    Raise RenderError naming the template, the line and the undefined name (or other error).
    """
    try:
        template = env.get_template(name)
        return template.render(**values)
    except jinja2.TemplateNotFound as exc:
        where = " or ".join(env.loader.searchpath)  # type: ignore[union-attr]
        raise RenderError(f"template not found: {exc.name} (under {where})") from None
    except Exception as exc:  # noqa: BLE001 - whatever a template raises is that template's error
        filename = getattr(exc, "filename", None) or _template_filename(env, name)
        line = error_line(exc, filename)
        where = f"{name}:{line}" if line else name
        raise RenderError(f"{where}: {_failure(exc)}") from None


def _template_filename(env: jinja2.Environment, name: str) -> str:
    try:
        _, filename, _ = env.loader.get_source(env, name)  # type: ignore[union-attr]
        return filename or name
    except jinja2.TemplateNotFound:
        return name


# --- cloud-init -------------------------------------------------------------------------


def render_user_data(ctx: RenderContext) -> str:
    """Return the cloud-init ``#cloud-config`` for a new host of this site.

    It sets the hostname, pins the host key made locally (so it holds the PRIVATE host key:
    treat the result as a secret), keeps root login (``disable_root: false``), installs the
    base packages and sets the timezone to UTC. Outside the sandbox it also writes Docker's
    daemon.json (the sandbox image has its own). Raise RenderError if no host key is given
    or the result is not valid YAML.
    """
    if ctx.host_key is None:
        raise RenderError("user-data needs a host key (HostKey.generate()): the first connection is pinned to it")
    env = environment(ctx.template_dirs)
    text = render_template(
        env,
        USER_DATA_TEMPLATE,
        {
            "inventory": ctx.inventory,
            "hostname": ctx.hostname or ctx.inventory.site,
            "host_key": ctx.host_key.cloud_config(),
            "authorized_keys": list(ctx.authorized_keys),
            "base_packages": BASE_PACKAGES,
            "sandbox": ctx.sandbox,
        },
    )
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RenderError(f"{USER_DATA_TEMPLATE}: the result is not valid YAML ({exc.__class__.__name__})") from None
    if not text.startswith("#cloud-config\n") or not isinstance(data, dict):
        raise RenderError(f"{USER_DATA_TEMPLATE}: the result must start with '#cloud-config' and be a mapping")
    return text


# --- the host's files -------------------------------------------------------------------


def env_file_path(app: str) -> str:
    return f"{RELAUNCH_DIR}/{app}.env"


def fpm_config_path(app: str) -> str:
    """The PHP-FPM configuration of a PHP app (systemd.php_fpm)."""
    return f"{RELAUNCH_DIR}/{app}.php-fpm.conf"


def password_file_path(database: str) -> str:
    return f"{SECRETS_DIR}/{database}.password"


def app_sources(
    templates_dir: Path | Sequence[Path], app: App, *, must_exist: bool = True
) -> list[tuple[str, Path]]:
    """Return (host path, source file) for every file of ``app``'s templates, sorted by host path.

    Every file under ``templates/apps/<app>/`` goes to ``/srv/<app>/<relative path>`` (a
    ``.j2`` suffix dropped), except the compose template (-> ``/srv/<app>/compose.yml``) and
    the systemd unit template (-> ``/etc/systemd/system/<app>.service``), wherever they are.
    ``templates_dir`` may be several directories, first match wins (a site's own templates,
    then relaunch's): their ``apps/<app>/`` trees are merged, a file of the same relative
    path taken from the first. Raise RenderError if one of those two is missing (unless
    ``must_exist`` is false).
    """
    dirs = _dirs(templates_dir)
    special: dict[Path, str] = {}
    if app.compose is not None:
        special[_template_file(dirs, app.compose.template, app.name, must_exist)] = f"/srv/{app.name}/compose.yml"
    if app.systemd is not None:
        fpm = app.systemd.php_fpm is not None
        unit = app.systemd.unit_template or (PHP_FPM_UNIT_TEMPLATE if fpm else COMMAND_UNIT_TEMPLATE)
        special[_template_file(dirs, unit, app.name, must_exist)] = f"/etc/systemd/system/{app.name}.service"
        if fpm:
            special[_template_file(dirs, PHP_FPM_POOL_TEMPLATE, app.name, must_exist)] = fpm_config_path(app.name)
    found: dict[str, Path] = {}
    for root in reversed(dirs):  # relaunch's first, the site's over it
        app_dir = root / "apps" / app.name
        if not app_dir.is_dir():
            continue
        for source in sorted(p for p in app_dir.rglob("*") if p.is_file()):
            rel = source.relative_to(app_dir)
            if _SKIP_PARTS & set(rel.parts) or source.suffix == ".pyc":
                continue
            found[rel.as_posix()] = source
    out: dict[str, Path] = {}
    for name, source in found.items():
        if source.resolve() in special:
            continue
        out[posixpath.join(f"/srv/{app.name}", name[:-3] if name.endswith(".j2") else name)] = source
    for source, dest in special.items():
        out[dest] = source
    return sorted(out.items())


def _dirs(templates_dir: Path | Sequence[Path]) -> list[Path]:
    return [Path(templates_dir)] if isinstance(templates_dir, Path | str) else [Path(d) for d in templates_dir]


def template_name(templates_dir: Path | Sequence[Path], source: Path) -> str:
    """Return the Jinja name of template file ``source`` (its path relative to the directory it is in)."""
    resolved = source.resolve()
    for root in _dirs(templates_dir):
        if root.resolve() in resolved.parents:
            return resolved.relative_to(root.resolve()).as_posix()
    raise RenderError(f"{source} is in none of the template directories")


def _template_file(dirs: list[Path], name: str, app: str, must_exist: bool = True) -> Path:
    """Return the file of template ``name`` (relative to templates/), from the first directory that has it.

    Raise RenderError if it is in none of them (or would be outside them).
    """
    first: Path | None = None
    for templates_dir in dirs:
        root = templates_dir.resolve()
        path = (templates_dir / name).resolve()
        if root not in path.parents:
            raise RenderError(f"apps[{app}]: template {name!r} is outside {templates_dir}")
        if path.is_file():
            return path
        first = first or path
    if must_exist:
        raise RenderError(f"template not found: {name} (under {' or '.join(str(d) for d in dirs)}; named by apps[{app}])")
    assert first is not None
    return first


def app_host_paths(ctx: RenderContext) -> dict[str, list[str]]:
    """Return app name -> the host paths of its rendered files (code and config, not data), env file included."""
    return {
        app.name: [dest for dest, _ in app_sources(ctx.template_dirs, app, must_exist=False)] + [env_file_path(app.name)]
        for app in ctx.inventory.apps
    }


def app_values(ctx: RenderContext, app: App) -> dict[str, Any]:
    """Return the Jinja context of an app's templates (no secret values in it)."""
    return {
        "inventory": ctx.inventory,
        "app": app,
        "images": dict(ctx.images.get(app.name, {})),
        "env_file": env_file_path(app.name),
        "fpm_config": fpm_config_path(app.name),
        "sandbox": ctx.sandbox,
    }


def render_host(ctx: RenderContext) -> list[RenderedFile]:
    """Return every file the site's host needs, sorted by path.

    Per app: its templates (see :func:`app_sources`), its env file (0600, secret), its nginx
    virtual host. Per non-sqlite database: its password file (0600, secret). With
    ``proxy.tls``: the certificate (read from the file the inventory names) and its key
    (0600, secret). And ``/etc/relaunch/site.json`` with non-secret facts. Raise RenderError on a missing
    value, a missing template or an unresolved secret reference.
    """
    env = environment(ctx.template_dirs)
    compose_env = compose_environment(ctx.template_dirs)
    inv = ctx.inventory
    files: list[RenderedFile] = []
    proxy_values = {
        "inventory": inv, "sandbox": ctx.sandbox, "tls": inv.proxy.tls is not None,
        "tls_certificate": TLS_CERTIFICATE, "tls_key": TLS_KEY,
    }
    for app in inv.apps:
        values = app_values(ctx, app)
        for dest, source in app_sources(ctx.template_dirs, app):
            executable = bool(source.stat().st_mode & stat.S_IXUSR)
            if source.name.endswith(".j2"):
                name = template_name(ctx.template_dirs, source)
                is_compose = app.compose is not None and dest == f"/srv/{app.name}/compose.yml"
                content = render_template(compose_env if is_compose else env, name, values).encode()
            else:
                content = source.read_bytes()
            files.append(RenderedFile(dest, content, 0o755 if executable else 0o644, secret=False))
        files.append(RenderedFile(env_file_path(app.name), _env_file(ctx, app), 0o600, secret=True))
        nginx = render_template(env, NGINX_TEMPLATE, {**proxy_values, "app": app})
        files.append(RenderedFile(f"/etc/nginx/sites-available/relaunch-{app.name}.conf", nginx.encode(), 0o644, False))
    default = render_template(env, NGINX_DEFAULT_TEMPLATE, proxy_values)
    files.append(RenderedFile("/etc/nginx/sites-available/relaunch-default.conf", default.encode(), 0o644, False))
    files += _tls_files(ctx)
    for db in inv.databases:
        if db.engine != "sqlite" and db.password is not None:
            secret = _secret(ctx, db.password, f"databases[{db.name}].password")
            files.append(RenderedFile(password_file_path(db.name), secret.encode(), 0o600, secret=True))
    files.append(RenderedFile(f"{RELAUNCH_DIR}/site.json", site_facts(ctx).encode(), 0o644, secret=False))
    seen: dict[str, str] = {}
    for f in files:
        if f.path in seen:
            raise RenderError(f"two templates render to {f.path}")
        seen[f.path] = f.path
    return sorted(files, key=lambda f: f.path)


def site_facts(ctx: RenderContext) -> str:
    """Return /etc/relaunch/site.json: the site, its apps, ports, images by digest (nothing secret)."""
    inv = ctx.inventory
    facts = {
        "site": inv.site,
        "apps": [
            {
                "name": a.name,
                "kind": a.kind,
                "domain": a.domain,
                "port": a.port,
                "databases": list(a.databases),
                "images": dict(ctx.images.get(a.name, {})),
                "env_file": env_file_path(a.name),
            }
            for a in inv.apps
        ],
        "databases": [
            {"name": d.name, "engine": d.engine, "runs": d.runs if isinstance(d.runs, str) else d.runs.model_dump()}
            for d in inv.databases
        ],
    }
    return json.dumps(facts, indent=2, sort_keys=True) + "\n"


def _tls_files(ctx: RenderContext) -> list[RenderedFile]:
    tls = ctx.inventory.proxy.tls
    if tls is None:
        return []
    try:
        certificate, _ = read_certificate(tls.certificate)
    except CertificateError as exc:
        raise RenderError(f"proxy.tls.certificate: {exc}") from None
    key = _secret(ctx, tls.key, "proxy.tls.key")
    return [
        RenderedFile(TLS_CERTIFICATE, certificate.encode(), 0o644, secret=False),
        RenderedFile(TLS_KEY, (key + "\n").encode(), 0o600, secret=True),
    ]


def _secret(ctx: RenderContext, ref: str, what: str) -> str:
    try:
        return ctx.secrets[ref].reveal()
    except KeyError:
        raise RenderError(f"{what}: secret {ref!r} was not resolved") from None


def _env_file(ctx: RenderContext, app: App) -> bytes:
    """KEY=value lines that systemd's EnvironmentFile=, Compose v1 and v2 read alike (``formats.env_assignment``)."""
    lines = [f"# relaunch: environment of {app.name} (generated; do not edit on the host)"]
    items = [(k, v, "env") for k, v in app.env.items()]
    items += [(k, _secret(ctx, ref, f"apps[{app.name}].secret_env.{k}"), "secret_env") for k, ref in app.secret_env.items()]
    for key, value, section in items:
        try:
            lines.append(formats.env_assignment(key, value))
        except formats.Unrepresentable as exc:  # the message never holds the value
            raise RenderError(f"apps[{app.name}].{section}.{key}: {exc}") from None
    return ("\n".join(lines) + "\n").encode()


# --- writing locally --------------------------------------------------------------------


def write_local(files: list[RenderedFile], out_dir: Path) -> list[Path]:
    """Write ``files`` under ``out_dir`` mirroring their host paths; return the paths written.

    Secret files are created with mode 0600 from the start (never chmod-ed down after the
    content is there); others get their own mode. An existing file is replaced. Raise
    RenderError for a path that would land outside ``out_dir``.
    """
    root = out_dir.resolve()
    written: list[Path] = []
    for f in files:
        target = _inside(root, f.path)
        target.parent.mkdir(parents=True, exist_ok=True)
        _write_file(target, f.content, 0o600 if f.secret else f.mode)
        written.append(target)
    return written


def write_secret_file(path: Path, content: bytes) -> None:
    """Write ``content`` to ``path`` created 0600 (e.g. a local copy of user-data)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_file(path, content, 0o600)


def _inside(root: Path, host_path: str) -> Path:
    rel = posixpath.normpath("/" + host_path).lstrip("/")
    if not host_path.startswith("/") or ".." in host_path.split("/") or not rel:
        raise RenderError(f"refusing to write {host_path!r}: not a plain absolute host path")
    target = root / rel
    if root not in target.resolve().parents:
        raise RenderError(f"refusing to write {host_path!r}: it resolves outside {root}")
    return target


def _write_file(path: Path, content: bytes, mode: int) -> None:
    if path.is_symlink() or path.exists():
        path.unlink()  # a new inode: an old file's looser mode is never inherited
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(content)
    if stat.S_IMODE(os.stat(path).st_mode) != mode:
        # the umask removed bits (e.g. 0755 under umask 077): widen to the intended mode, never more
        os.chmod(path, mode)


# --- a whole site, locally (fab render) ---------------------------------------------------


SANDBOX_REGISTRY = "relaunch-sandbox-registry:5000"


def preview_images(inv: Inventory, sandbox: bool) -> dict[str, dict[str, str]]:
    """Return image references by tag for a local preview (``:latest`` for an image of your own).

    A rebuild deploys by digest, read from what production runs; a preview made without
    production at hand can only name the repository.
    """
    registry = SANDBOX_REGISTRY if sandbox else inv.docker.registry

    def preview(repo: str) -> str:
        if is_by_tag(repo):  # a public image: as written (in the sandbox, its registry plays the public one)
            return in_registry(repo, SANDBOX_REGISTRY) if sandbox else repo
        return f"{registry}/{repo}:latest" if registry else f"{repo}:latest"

    return {app.name: {service: preview(repo) for service, repo in app.compose.images.items()}
            for app in inv.apps if app.compose is not None}


@dataclass(frozen=True)
class LocalRender:
    """What :func:`render_site_locally` wrote: every file, the secret ones, and the user-data."""

    out_dir: Path
    files: list[Path]
    secret_files: list[Path]
    user_data: Path


def render_site_locally(
    inv: Inventory,
    secrets: Mapping[str, SecretLike],
    out_dir: Path,
    *,
    images: Mapping[str, Mapping[str, str]] | None = None,
    templates_dir: Path = TEMPLATES_DIR,
) -> LocalRender:
    """Render everything a new host of ``inv``'s site gets and write it under ``out_dir``.

    Host files mirror their host paths; the cloud-init user-data goes to ``out_dir/user-data``
    (0600: it holds a host key, made here just for this preview). ``images`` defaults to
    :func:`preview_images`. Raise RenderError on any rendering or writing problem.
    """
    sandbox = inv.provider.kind == "sandbox"
    ctx = RenderContext(
        inventory=inv,
        secrets=secrets,
        images=images if images is not None else preview_images(inv, sandbox),
        sandbox=sandbox,
        host_key=HostKey.generate(),
        templates_dir=templates_dir,
    )
    files = render_host(ctx)
    user_data = render_user_data(ctx)
    written = write_local(files, out_dir)
    target = out_dir.resolve() / "user-data"
    write_secret_file(target, user_data.encode())
    secret = [path for path, f in zip(written, files) if f.secret] + [target]
    return LocalRender(out_dir.resolve(), [*written, target], secret, target)
