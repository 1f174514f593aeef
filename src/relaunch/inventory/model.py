"""The inventory schema: what a user writes once to describe their server.

One pydantic model per section; every field described, unknown keys rejected
(``extra="forbid"``). Secrets are references only (``env:NAME`` or ``file:PATH``),
resolved at run time by ``relaunch.inventory.secrets``.
"""

from __future__ import annotations

import os
import re
from ipaddress import IPv4Address
from pathlib import Path
from typing import Annotated, Literal, NoReturn

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from relaunch import formats
from relaunch.inventory.errors import Problem, UnknownNameError

_SLUG = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
_HOSTNAME = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+$")
_SECRET = re.compile(r"^(env:[A-Za-z_][A-Za-z0-9_]*|file:.+)$")
# Docker's reference grammar (distribution/reference): path components, an optional registry host[:port]
_IMAGE_PATH = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
_IMAGE = re.compile(rf"^(?:[a-zA-Z0-9.-]+(?::[0-9]+)?/)?{_IMAGE_PATH}(?::[A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}})?$")
_REGISTRY = re.compile(rf"^[a-zA-Z0-9]([a-zA-Z0-9.-]*[a-zA-Z0-9])?(?::[0-9]+)?(?:/{_IMAGE_PATH})?$")
_SERVICE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$")
_URL_PATH = re.compile(r"^/[\x21-\x7e]{0,2000}$")
_RECORD = re.compile(r"^(@|\*|(\*\.)?[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*)$")


def _slug(value: str) -> str:
    if not _SLUG.match(value):
        raise ValueError("a lowercase name: letters, digits and dashes, starting with a letter (e.g. 'blog')")
    return value


def _hostname(value: str) -> str:
    if not _HOSTNAME.match(value):
        raise ValueError("a fully qualified lowercase host name (e.g. 'blog.example.test')")
    return value


def _secret(value: str) -> str:
    if not _SECRET.match(value):
        raise ValueError(
            "a secret reference, 'env:NAME' (an environment variable) or 'file:PATH' (a file; relative paths "
            "start at the inventory's directory); secrets are never written inline"
        )
    return value


def _text(value: str) -> str:
    problem = formats.text_problem(value)
    if problem:
        raise ValueError(f"printable text (this {problem})")
    return value


def inside(path: str, tree: str) -> bool:
    """Whether the absolute ``path`` lies inside the directory ``tree`` (below it, not the tree itself)."""
    return path.startswith(tree.rstrip("/") + "/")


def _abs_path(value: str) -> str:
    expected = "an absolute path on the host, not '/' itself, with no '.', '..' or empty parts (e.g. '/srv/blog/uploads')"
    parts = value.rstrip("/").split("/")
    if not value.startswith("/") or len(parts) < 2 or any(p in ("", ".", "..") for p in parts[1:]):
        raise ValueError(expected)
    problem = formats.text_problem(value)
    if problem:
        raise ValueError(f"{expected}; this {problem}")
    if ":" in value:
        # Compose's volume syntax (SOURCE:TARGET[:MODE]) splits at ':'
        raise ValueError(f"{expected}, without ':' (Compose's volume separator)")
    return value.rstrip("/")


def _image(value: str) -> str:
    if not _IMAGE.match(value):
        raise ValueError("an image repository of your own without tag (e.g. 'example/blog'), or a public image by tag "
                         "(e.g. 'docker.io/library/nginx:1.25' or 'nginx:1.25'); never a digest: relaunch pins the digest "
                         "when it deploys")
    return value


def _registry(value: str) -> str:
    if not _REGISTRY.match(value):
        raise ValueError("a registry host[:port][/path] (e.g. 'registry.digitalocean.com/mysite')")
    return value


def _service(value: str) -> str:
    if not _SERVICE.match(value):
        raise ValueError("a Compose service name: letters, digits, '_', '.' and '-', starting with a letter or digit")
    return value


def _url_path(value: str) -> str:
    if not _URL_PATH.match(value):
        raise ValueError("a URL path: '/' then printable ASCII without spaces (percent-encode the rest), e.g. '/health'")
    return value


def _package(value: str) -> str:
    if not re.match(r"^[a-z0-9][a-z0-9+.-]+$", value):
        raise ValueError("a Debian package name (lowercase letters, digits, '+', '-', '.'; e.g. 'python3-pymysql')")
    return value


def _unix_user(value: str) -> str:
    if not re.match(r"^[a-z_][a-z0-9_-]{0,31}$", value):
        raise ValueError("a Unix user name (lowercase letters, digits, '_' and '-', at most 32; e.g. 'www-data')")
    if value == "root":
        raise ValueError("a user other than root: an app that a bug or a bad upgrade takes over should not own the host")
    return value


def _record(value: str) -> str:
    if not _RECORD.match(value):
        raise ValueError("a record name in the zone: '@' for the apex, or lowercase labels (e.g. 'blog', 'www')")
    return value


Slug = Annotated[str, AfterValidator(_slug)]
Hostname = Annotated[str, AfterValidator(_hostname)]
SecretRef = Annotated[str, AfterValidator(_secret)]
AbsPath = Annotated[str, AfterValidator(_abs_path)]
Text = Annotated[str, AfterValidator(_text)]
Image = Annotated[str, AfterValidator(_image)]
ServiceName = Annotated[str, AfterValidator(_service)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


KeyPath = tuple[str | int, ...]


def _fail(*problems: tuple[KeyPath, str]) -> NoReturn:
    """Reject a model with one or more problems, each at a key path relative to the model.

    A model-level check (one field against another, cross references) would otherwise be
    reported at the model as a whole; the loader reads ``ctx["problems"]`` to point at the
    exact key (and its line) instead.
    """
    raise PydanticCustomError(
        "inventory", "{message}", {"message": "; ".join(m for _, m in problems), "problems": tuple(problems)}
    )


class Provider(Strict):
    """Where new Droplets are made."""

    kind: Literal["sandbox", "digitalocean"] = Field(
        description="'sandbox' (the local sandbox cloud) or 'digitalocean'", examples=["digitalocean"]
    )
    region: Text = Field(description="DigitalOcean region slug", examples=["fra1"])
    size: Text = Field(description="Droplet size slug", examples=["s-2vcpu-4gb"])
    image: Text = Field("debian-12-x64", description="image slug of new Droplets", examples=["debian-12-x64"])
    tags: list[Slug] = Field(default_factory=list, description="tags put on every Droplet relaunch makes")
    token: SecretRef | None = Field(
        None,
        description="API token reference; required for digitalocean (the sandbox uses its own token)",
        examples=["env:DIGITALOCEAN_ACCESS_TOKEN"],
    )
    ssh_key: Text | None = Field(
        None,
        description="path of the private SSH key relaunch logs in with (null: the sandbox's own key)",
        examples=["~/.ssh/id_ed25519"],
    )

    @model_validator(mode="after")
    def _needs_token(self) -> Provider:
        problems: list[tuple[KeyPath, str]] = []
        if self.kind == "digitalocean" and self.token is None:
            problems.append((("kind",), "provider.token is required for digitalocean (e.g. 'env:DIGITALOCEAN_ACCESS_TOKEN')"))
        if self.kind == "digitalocean" and self.ssh_key is None:
            problems.append((("kind",), "provider.ssh_key is required for digitalocean (the private key relaunch logs in with)"))
        if problems:
            _fail(*problems)
        return self


class Production(Strict):
    """The host that serves the site today."""

    droplet_name: Text | None = Field(None, description="name of the production Droplet", examples=["example-prod"])
    address: IPv4Address | None = Field(None, description="its public IPv4, when not found by name", examples=["203.0.113.10"])
    user: Text = Field("root", description="SSH user")

    @model_validator(mode="after")
    def _one_way_to_find_it(self) -> Production:
        if self.droplet_name is None and self.address is None:
            _fail(((), "give production.droplet_name or production.address"))
        return self


class HealthCheck(Strict):
    """One HTTP(S) request that must succeed for an app to count as up (and its data present)."""

    scheme: Literal["http", "https"] = Field(
        "http", description="https: TLS with the Host name as SNI, certificate verified (needs proxy.tls)"
    )
    path: Annotated[str, AfterValidator(_url_path)] = Field("/", description="URL path", examples=["/health"])
    status: int = Field(200, ge=100, le=599, description="expected HTTP status")
    contains: Text | None = Field(None, description="text the body must contain", examples=['"posts":'])
    host: Hostname | None = Field(None, description="Host header (default: the app's domain)")
    timeout: float = Field(5.0, gt=0, le=120, allow_inf_nan=False, description="seconds to wait for the answer")


#: Where Docker's local volume driver keeps a named volume's files (``<project>_<volume>/_data`` below).
DOCKER_VOLUMES = "/var/lib/docker/volumes"


def _volume_name(value: str) -> str:
    if not re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}", value):
        raise ValueError("a Compose volume name (letters, digits, '_', '.', '-'), e.g. 'media'")
    return value


class ComposeApp(Strict):
    """How a Docker Compose app is deployed."""

    template: Text = Field(description="compose file template, relative to templates/", examples=["apps/blog/compose.yml.j2"])
    images: dict[ServiceName, Image] = Field(
        default_factory=dict,
        description="service name -> image: a repository of your own without tag (pushed to docker.registry), or a "
        "public image by tag (e.g. 'docker.io/library/nginx:1.25'), resolved to its digest when deployed; hosts always "
        "run images by digest, and a rebuild deploys the digests production ran (never the tag again)",
        examples=[{"web": "example/blog", "cache": "docker.io/library/redis:7.0"}],
    )
    volumes: list[Annotated[str, AfterValidator(_volume_name)]] = Field(
        default_factory=list,
        description="named volumes of its compose file whose files are carried to a new host with its trees (owners, "
        "modes, links kept); not a database's volume: a database moves as a dump", examples=[["media"]])


def _php_setting(value: str) -> str:
    if not re.match(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$", value):
        raise ValueError("a php.ini directive name (lowercase letters, digits, '_' and '.'; e.g. 'upload_max_filesize')")
    return value


def _php_value(value: str) -> str:
    if not re.match(r"^[A-Za-z0-9_.,:/+ -]{1,200}$", value):
        raise ValueError("a php.ini value of letters, digits, spaces and '_.,:/+-' (e.g. '64M', 'Europe/Berlin')")
    return value


def _php_version(value: str) -> str:
    if not re.match(r"^[5-9]\.[0-9]$", value):
        raise ValueError("a PHP version MAJOR.MINOR (e.g. '8.2', Debian 12's)")
    return value


def _php_index(value: str) -> str:
    if not re.match(r"^[A-Za-z0-9_.-]+\.php$", value):
        raise ValueError("a PHP file name (e.g. 'index.php')")
    return value


class PhpFpm(Strict):
    """A PHP app (WordPress, MediaWiki, Matomo, Nextcloud …) served by PHP-FPM behind the proxy.

    relaunch writes a PHP-FPM of the app's own (unit ``<app>.service``, running as the app's
    user, default ``www-data``; its pool listens for FastCGI on 127.0.0.1:<port>) and a
    virtual host that serves the document root's files itself and passes ``*.php`` to it.
    The app's environment (env and secret_env) reaches PHP's ``getenv()``.
    """

    root: AbsPath = Field(description="the document root: static files served by nginx, PHP scripts run by PHP-FPM",
                          examples=["/usr/share/wordpress"])
    version: Annotated[str, AfterValidator(_php_version)] = Field(
        "8.2", description="the PHP version of the host's packages (Debian 12: 8.2); the package php<version>-fpm is installed")
    index: Annotated[str, AfterValidator(_php_index)] = Field(
        "index.php", description="the front controller unknown paths go to")
    max_children: int = Field(5, ge=1, le=500, description="most PHP workers at once (pm.max_children)")
    settings: dict[Annotated[str, AfterValidator(_php_setting)], Annotated[str, AfterValidator(_php_value)]] = Field(
        default_factory=dict, description="php.ini settings for this app only (php_admin_value)",
        examples=[{"upload_max_filesize": "64M", "post_max_size": "64M", "memory_limit": "256M"}])


class SystemdApp(Strict):
    """How a native app runs under systemd: a unit of your own (a template), any command relaunch makes a unit for,
    or PHP-FPM serving a PHP app."""

    unit_template: Text | None = Field(
        None, description="unit file template, relative to templates/ (the site's own first); or give 'command'",
        examples=["apps/stats/stats.service.j2"])
    command: list[Text] | None = Field(
        None, min_length=1, max_length=200,
        description="or: the command to run, as a list of words (no shell); relaunch writes the unit "
        "(templates/systemd/command.service.j2: the app's user, env file, restart on failure)",
        examples=[["/usr/bin/php", "-S", "127.0.0.1:8091", "-t", "/usr/share/mediawiki"]])
    working_directory: AbsPath | None = Field(None, description="with 'command': the directory it runs in (default: /srv/<app>)")
    php_fpm: PhpFpm | None = Field(
        None, description="or: a PHP app served by PHP-FPM (relaunch writes its unit, its pool and a FastCGI virtual host)",
        examples=[{"root": "/usr/share/wordpress", "settings": {"upload_max_filesize": "64M"}}])
    packages: list[Annotated[str, AfterValidator(_package)]] = Field(default_factory=list, description="Debian packages it needs", examples=[["python3-pymysql"]])

    @model_validator(mode="after")
    def _one_way_to_run(self) -> SystemdApp:
        if sum(x is not None for x in (self.unit_template, self.command, self.php_fpm)) != 1:
            _fail(((), "give one of systemd.unit_template (a unit of your own), systemd.command (relaunch writes the "
                   "unit) or systemd.php_fpm (a PHP app: relaunch writes PHP-FPM's unit and pool)"))
        if self.command is None and self.working_directory is not None:
            _fail((("working_directory",), "working_directory goes with command (a unit template says its own)"))
        return self

    @property
    def needed_packages(self) -> list[str]:
        """Its packages, and PHP-FPM's for a PHP app."""
        extra = [f"php{self.php_fpm.version}-fpm"] if self.php_fpm is not None else []
        return [*extra, *(p for p in self.packages if p not in extra)]


def _unit_name(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9:_.@\\-]*", value) or len(value) > 250:
        raise ValueError("a systemd unit name (letters, digits, ':', '_', '.', '@', '-'), e.g. 'stats.service'")
    return value if "." in value else value + ".service"


class AppControl(Strict):
    """How relaunch stops and starts an app on a production host set up by hand (`fab adopt`).

    Hosts relaunch built use its own layout (unit ``<name>.service``; Compose project ``<name>``
    from ``/srv/<name>/compose.yml`` with ``/etc/relaunch/<name>.env``): these are the defaults.
    """

    unit: Annotated[str, AfterValidator(_unit_name)] | None = Field(
        None, description="systemd app: the unit that runs it there (default <name>.service)", examples=["stats.service"])
    compose_dir: AbsPath | None = Field(
        None, description="Compose app: the directory its compose file (and .env) is in, where `docker compose` "
        "is run (default: relaunch's /srv/<name>/compose.yml with /etc/relaunch/<name>.env)", examples=["/opt/blog"])
    compose_project: Slug | None = Field(
        None, description="with compose_dir: the Compose project name (default: the directory's name, as Compose "
        "derives it)", examples=["blog"])


class App(Strict):
    """One application of the site, behind the reverse proxy by Host header."""

    name: Slug = Field(description="short name", examples=["blog"])
    kind: Literal["compose", "systemd"] = Field(description="a Docker Compose project or a native systemd service")
    domain: Hostname = Field(description="the host name it answers on", examples=["blog.example.test"])
    port: int = Field(ge=1024, le=65535, description="port it listens on at 127.0.0.1 (the proxy's upstream)")
    files: list[AbsPath] = Field(default_factory=list, description="file trees to carry to a new host", examples=[["/srv/blog/uploads"]])
    databases: list[Slug] = Field(default_factory=list, description="names of its databases (see databases)")
    health: list[HealthCheck] = Field(min_length=1, description="checks that prove it is up with its data")
    user: Annotated[str, AfterValidator(_unix_user)] | None = Field(
        None, description="the Unix user the app runs as (not root); a unit made from 'systemd.command' runs as it "
        "(default there: a dynamic user of systemd's); templates see it as app.user", examples=["www-data"])
    env: dict[str, str] = Field(default_factory=dict, description="plain environment for the app")
    secret_env: dict[str, SecretRef] = Field(
        default_factory=dict, description="environment from secret references (written to a 0600 env file)"
    )
    compose: ComposeApp | None = Field(None, description="required when kind is compose")
    systemd: SystemdApp | None = Field(None, description="required when kind is systemd")
    control: AppControl = Field(
        default_factory=AppControl, description="how to stop and start it on a production host set up by hand "
        "(`fab adopt`): its unit, or its Compose directory; the defaults are relaunch's own layout")

    def volume_paths(self) -> list[str]:
        """Where its carried named volumes' files are on a host relaunch built (Compose project ``<name>``)."""
        volumes = self.compose.volumes if self.compose else []
        return [f"{DOCKER_VOLUMES}/{self.name}_{v}/_data" for v in volumes]

    def trees(self) -> list[str]:
        """Every file tree carried to a new host: its ``files``, then its named volumes' directories."""
        return [*self.files, *self.volume_paths()]

    @model_validator(mode="after")
    def _kind_section(self) -> App:
        problems: list[tuple[KeyPath, str]] = []
        if self.compose is not None and self.compose.volumes and self.control.compose_dir is not None:
            problems.append((("compose", "volumes"), "named volumes are carried from relaunch's layout only (Compose "
                             "project <name>); not with control.compose_dir yet"))
        if self.kind == "compose" and self.control.unit is not None:
            problems.append((("control", "unit"), "a Compose app is stopped and started by its compose_dir, not a unit"))
        if self.kind == "systemd" and (self.control.compose_dir or self.control.compose_project):
            problems.append((("control", "compose_dir"), "a systemd app is stopped and started by its unit"))
        if self.control.compose_project and not self.control.compose_dir:
            problems.append((("control", "compose_project"), "compose_project goes with compose_dir"))
        if self.kind == "compose" and self.compose is None:
            problems.append((("kind",), "an app of kind 'compose' needs a 'compose' section"))
        if self.kind == "systemd" and self.systemd is None:
            problems.append((("kind",), "an app of kind 'systemd' needs a 'systemd' section"))
        if self.kind == "compose" and self.systemd is not None:
            problems.append((("systemd",), "an app of kind 'compose' takes no 'systemd' section"))
        if self.kind == "systemd" and self.compose is not None:
            problems.append((("compose",), "an app of kind 'systemd' takes no 'compose' section"))
        # the env file (/etc/relaunch/<app>.env) is read by systemd, Compose v1 and v2: see relaunch.formats
        for section in ("env", "secret_env"):
            for key, value in getattr(self, section).items():
                problem = formats.env_key_problem(key)
                if problem:
                    problems.append(((section, key), f"{key!r} {problem}"))
                elif section == "env":
                    problem = formats.env_value_problem(value)
                    if problem:
                        problems.append(((section, key), f"the value of {key} {problem}"))
        for key in sorted(set(self.env) & set(self.secret_env)):
            problems.append((("secret_env", key), f"{key} is set in env too; give each variable once"))
        if problems:
            _fail(*problems)
        return self


class ComposeService(Strict):
    """A database that is a service of an app's Compose project."""

    app: Slug = Field(description="the compose app", examples=["blog"])
    service: ServiceName = Field(description="the service name in its compose file", examples=["db"])


class Database(Strict):
    """One database and where it runs."""

    name: Slug = Field(description="short name apps refer to", examples=["blog"])
    engine: Literal["postgresql", "mariadb", "mysql", "sqlite"]
    runs: Literal["native"] | ComposeService = Field(
        "native", description="'native' (the host's own server) or {app, service} of a compose project"
    )
    database: str | None = Field(None, description="database name on the server (not for sqlite)", examples=["blog"])
    user: str | None = Field(None, description="user the app connects as (not for sqlite)", examples=["blog"])
    password: SecretRef | None = Field(None, description="that user's password, by reference (not for sqlite)")
    path: AbsPath | None = Field(None, description="the database file (sqlite only)", examples=["/srv/notes/notes.db"])

    @model_validator(mode="after")
    def _engine_fields(self) -> Database:
        problems: list[tuple[KeyPath, str]] = []
        if self.engine == "sqlite":
            if self.path is None:
                problems.append((("engine",), "a sqlite database needs 'path'"))
            for key in ("database", "user", "password"):
                if getattr(self, key) is not None:
                    problems.append(((key,), f"a sqlite database takes only 'path' (no {key})"))
            if self.runs != "native":
                problems.append((("runs",), "a sqlite database is a file: runs must be 'native'"))
        else:
            missing = [k for k in ("database", "user", "password") if getattr(self, k) is None]
            if missing:
                problems.append((("engine",), f"a {self.engine} database needs {', '.join(missing)}"))
            if self.path is not None:
                problems.append((("path",), f"'path' is for sqlite only, not {self.engine}"))
            for key in ("database", "user"):
                value = getattr(self, key)
                problem = None if value is None else formats.sql_name_problem(value, self.engine, key)
                if problem:
                    problems.append(((key,), f"the {key} name {problem}"))
        if problems:
            _fail(*problems)
        return self


class Tls(Strict):
    """The certificate the proxy serves on port 443 for every app's domain."""

    certificate: Text = Field(
        description="PEM file, leaf first then its chain, covering every app's domain; a path relative to the "
        "inventory file (not secret)",
        examples=["../certs/example/fullchain.pem"],
    )
    key: SecretRef = Field(description="its private key (PEM), by reference", examples=["file:../secrets/example/tls.key"])
    ca: Text | None = Field(
        None,
        description="CA certificates (PEM) the health checks trust, relative to the inventory file "
        "(default: the system's; the sandbox makes its own CA)",
        examples=["../secrets/example/tls-ca.pem"],
    )

    @field_validator("certificate", "ca")
    @classmethod
    def _beside_inventory(cls, value: str | None, info: ValidationInfo) -> str | None:
        """A relative path is made absolute against the inventory file's directory (the loader passes it)."""
        base = (info.context or {}).get("base_dir")
        if value is None or base is None:
            return value
        return os.path.abspath(Path(base) / Path(value).expanduser())


class Proxy(Strict):
    """The reverse proxy in front of the apps (from Debian's packages)."""

    kind: Literal["nginx"] = Field("nginx", description="nginx, one virtual host per app")
    tls: Tls | None = Field(None, description="serve HTTPS too (port 443, SNI per app); null: HTTP only")


class DnsRecordSpec(Strict):
    name: Annotated[str, AfterValidator(_record)] = Field(
        description="record name in the zone, '@' for the apex", examples=["@", "blog"]
    )
    type: Literal["A", "AAAA"] = "A"


class Dns(Strict):
    """The zone and the records a switch points at the new host."""

    zone: Hostname = Field(description="the DigitalOcean-hosted zone", examples=["example.test"])
    records: list[DnsRecordSpec] = Field(min_length=1, description="records to switch")
    ttl: int = Field(1800, ge=30, le=86400, description="normal TTL of those records, seconds")
    switch_ttl: int = Field(60, ge=30, le=3600, description="TTL while a switch is prepared, seconds")
    reserved_ip: IPv4Address | None = Field(None, description="a Reserved IP to move instead of records")


class Retention(Strict):
    keep_within_hours: int = Field(24, ge=1, le=8784, description="keep every backup this recent (at most a year)")
    daily: int = Field(14, ge=0, le=3660, description="then one a day for this many days (at most ten years)")
    weekly: int = Field(8, ge=0, le=520, description="then one a week for this many weeks (at most ten years)")


class Offsite(Strict):
    """The store that survives the host (restic repository)."""

    kind: Literal["sftp", "s3"] = Field(description="sftp (a backup host; the sandbox's) or s3 (e.g. Spaces)")
    repository: Text = Field(description="restic repository", examples=["sftp:backup@backup.example.test:/srv/restic/example"])
    password: SecretRef = Field(description="restic repository password, by reference")
    access_key: SecretRef | None = Field(None, description="s3 access key id, by reference")
    secret_key: SecretRef | None = Field(None, description="s3 secret key, by reference")
    ssh_key: SecretRef | None = Field(
        None,
        description="sftp: the private key (by reference) a rebuild's new host reads the store with, authorized on the "
        "store by you; with known_hosts, a rebuild from backup needs nothing from this machine's state or from production",
        examples=["file:../secrets/example/offsite/id_ed25519"],
    )
    known_hosts: str | None = Field(
        None,
        description="sftp: the store's pinned host key, a known_hosts file (relative to the inventory file); its first "
        "line's names are the repository's host and optionally the address to reach it at",
        examples=["../secrets/example/offsite/known_hosts"],
    )

    append_only_key: SecretRef | None = Field(
        None,
        description="sftp, a store of your own that relaunch has no login on: the production host's private key for "
        "the store (by reference), authorized there by you append-only (`fab backup --install` says the line for the "
        "store's authorized_keys; the store needs rclone); production and a rebuild's new host then reach the store "
        "through rclone's append-only restic server and can delete nothing. Needs known_hosts; not the ssh_key",
        examples=["file:../secrets/example/offsite/append_only_key"],
    )

    @field_validator("known_hosts")
    @classmethod
    def _beside_inventory(cls, value: str | None, info: ValidationInfo) -> str | None:
        base = (info.context or {}).get("base_dir")
        if value is None or base is None:
            return value
        return os.path.abspath(Path(base) / Path(value).expanduser())

    @model_validator(mode="after")
    def _append_only_needs(self) -> "Offsite":
        if self.append_only_key is not None:
            if self.kind != "sftp":
                raise ValueError("append_only_key is for an sftp store (kind: sftp)")
            if not self.known_hosts:
                raise ValueError("append_only_key needs known_hosts (the store's pinned host key)")
            if self.append_only_key == self.ssh_key:
                raise ValueError("append_only_key must be another key than ssh_key (that one keeps full access)")
        return self


class Backups(Strict):
    interval_minutes: int = Field(15, ge=1, le=1440, description="minutes between backups")
    retention: Retention = Field(default_factory=Retention)
    offsite: Offsite | None = Field(None, description="off-host copy (strongly advised)")
    mariadb_fingerprint: Literal["paired", "scratch"] | bool = Field(
        "paired",
        description="how each MariaDB/MySQL dump is fingerprinted. paired (or true): writes to the database pause "
        "while the fingerprint's and the dump's snapshots start (usually under a second, at most 5 s waiting for "
        "the lock and 30 s held), then both read on; the scratch way where that cannot be done (a table not "
        "InnoDB, the lock not had). scratch: the dump restored into a scratch database <name>_relaunch_fp on the "
        "same server, fingerprinted, dropped (about a restore's time, the database's size again while it runs; "
        "writers never wait). false: no fingerprint for them",
    )


class Objectives(Strict):
    rto_minutes: int = Field(30, ge=1, le=10080, description="longest acceptable time to be back up (at most a week)")
    rpo_minutes: int = Field(15, ge=1, le=10080, description="most recent data one may lose, in minutes (at most a week)")


#: A byte size's units: decimal (kB, MB, GB, TB) and binary (KiB, MiB, GiB, TiB); no unit or B: bytes.
_BYTE_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
               "t": 1000**4, "tb": 1000**4, "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4}
#: The defaults of ``verify`` (relaunch.transfer.Sampling has the same).
SAMPLE_ABOVE = 8 * 1024**3
SAMPLE_SIZE = 512 * 1024**2


def _byte_size(value: object) -> object:
    """A size as written in the inventory (``8GiB``, ``512 MiB``, ``1.5GB``, ``4096``) -> bytes (an int)."""
    expected = "a size in bytes: a whole number, or a number with a unit (B, kB, MB, GB, TB, KiB, MiB, GiB, TiB), e.g. '8GiB'"
    if isinstance(value, bool):
        raise ValueError(expected)
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", value)
        if m and m.group(2).lower() in _BYTE_UNITS:
            return int(float(m.group(1)) * _BYTE_UNITS[m.group(2).lower()])
    raise ValueError(expected)


ByteSize = Annotated[int, BeforeValidator(_byte_size)]


class Verify(Strict):
    """How a rebuild or a drill checks the restored file trees against their source."""

    sample_above: ByteSize = Field(
        SAMPLE_ABOVE, ge=1, le=1024**5,
        description="a tree whose files total more than this has only a seeded sample of its files' contents hashed "
        "(sha256; other files each run, the same on both hosts), which the report says; every file's type, size, mode "
        "and owner is still compared", examples=["8GiB"])
    sample_size: ByteSize = Field(
        SAMPLE_SIZE, ge=1, le=1024**5, description="how many bytes of such a tree's files the sample hashes",
        examples=["512MiB"])


class DockerSettings(Strict):
    compose: Literal["auto", "v2", "v1"] = Field(
        "auto", description="'docker compose' (v2), 'docker-compose' (v1, Debian 12's), or auto-detect"
    )
    packages: Literal["debian", "docker"] = Field(
        "debian", description="Docker from Debian's archive (docker.io) or Docker's own packages (docker-ce)"
    )
    registry: Annotated[str, AfterValidator(_registry)] | None = Field(
        None, description="registry the app images come from (null in the sandbox: its own registry)",
        examples=["registry.digitalocean.com/mysite"],
    )


def _ignore_pattern(value: str) -> str:
    from relaunch.drift.compare import KINDS

    head, sep, glob = value.partition(":")
    if not value.strip() or formats.text_problem(value) or (sep and head.isidentifier() and head not in KINDS) or (
            sep and head in KINDS and not glob):
        raise ValueError(f"KIND:GLOB (KIND one of {', '.join(KINDS)}), or a bare GLOB matched against any kind's subject "
                         "(e.g. 'etc:/etc/myapp/cache/*', 'unit:certbot.timer', 'file:*.bak')")
    return value


class Drift(Strict):
    """What `fab drift` leaves out, and what a drill makes of drift."""

    ignore: list[Annotated[str, AfterValidator(_ignore_pattern)]] = Field(
        default_factory=list,
        description="more to leave out than the documented defaults (logs, caches, relaunch's own files, machine ids, "
        "host keys): KIND:GLOB patterns, KIND one of package, etc, unit, cron, port, project, container, image, volume, "
        "database, user, server_name, file; '*' also matches '/'",
        examples=[["etc:/etc/myapp/cache/*", "unit:certbot.timer", "file:/srv/blog/uploads-old/*"]],
    )
    fail_drill: bool = Field(
        False, description="a drill fails when production has state the inventory does not describe (default: the "
        "drill passes and its summary says so)")


def _webhook(value: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or formats.text_problem(value) or " " in value:
        raise ValueError("an http:// or https:// URL without spaces (e.g. 'https://ntfy.sh' with a topic, or a "
                         "webhook's full URL); a URL holding a secret: name it by reference in webhook_url")
    return value


class Alerts(Strict):
    """Where relaunch reports what needs a person: a failed drill, a missed objective, a failed or too old backup."""

    webhook: Annotated[str, AfterValidator(_webhook)] | None = Field(
        None, description="URL that gets a JSON POST per alert (title, message, priority 1-5, tags; plus event, site "
        "and details unless topic is set)", examples=["https://ntfy.sh", "https://hooks.example.test/relaunch"])
    webhook_url: SecretRef | None = Field(
        None, description="the same, by reference, for a URL that holds a secret (instead of webhook)",
        examples=["env:RELAUNCH_ALERT_WEBHOOK"])
    topic: Text | None = Field(
        None, description="ntfy: the topic; the body is then exactly ntfy's JSON publish (topic, title, message, "
        "priority, tags), POSTed to the server's root URL given as webhook", examples=["relaunch-mysite-x7q2"])
    token: SecretRef | None = Field(
        None, description="sent as 'Authorization: Bearer TOKEN' (an ntfy access token, say), by reference",
        examples=["env:NTFY_TOKEN"])

    @model_validator(mode="after")
    def _one_url(self) -> "Alerts":
        if self.webhook and self.webhook_url:
            raise ValueError("give webhook or webhook_url, not both")
        if not (self.webhook or self.webhook_url):
            raise ValueError("webhook (a URL) or webhook_url (a secret reference to one) is required")
        return self


#: Where a site's own runbooks and templates live by default, relative to the inventory file.
SITE_FILES_DEFAULT = "../sites/{site}/{what}"


class Inventory(Strict):
    """One site: its host, apps, databases, DNS, backups and objectives."""

    site: Slug = Field(description="the site's short name (the inventory file is inventory/<site>.yml)")
    description: Text = Field("", description="free text (one line)")
    runbooks: Text | None = Field(
        None,
        description="directory of the site's own runbooks (NN-name.md), merged with relaunch's by their number; "
        "relative to the inventory file (default: ../sites/<site>/runbooks, when it exists)",
        examples=["../sites/wiki/runbooks"],
    )
    templates: Text | None = Field(
        None,
        description="directory of the site's own templates, searched before relaunch's (a file of the same path "
        "wins); relative to the inventory file (default: ../sites/<site>/templates, when it exists)",
        examples=["../sites/wiki/templates"],
    )
    provider: Provider
    production: Production
    docker: DockerSettings = Field(default_factory=DockerSettings)
    proxy: Proxy = Field(default_factory=Proxy)
    apps: list[App] = Field(min_length=1)
    databases: list[Database] = Field(default_factory=list)
    dns: Dns
    backups: Backups = Field(default_factory=Backups)
    objectives: Objectives = Field(default_factory=Objectives)
    verify: Verify = Field(default_factory=Verify, description="how rebuilds and drills check the restored trees")
    drift: Drift = Field(default_factory=Drift, description="`fab drift`: what it leaves out; whether drift fails a drill")
    alerts: Alerts | None = Field(None, description="where alerts go (a webhook; ntfy-compatible); none: no alerts")

    #: The inventory file's directory, when it was loaded from a file (the default site directories hang off it).
    _base_dir: Path | None = PrivateAttr(None)

    @field_validator("runbooks", "templates")
    @classmethod
    def _site_dir(cls, value: str | None, info: ValidationInfo) -> str | None:
        """A relative path is made absolute against the inventory file's directory; it must be a directory."""
        base = (info.context or {}).get("base_dir")
        if value is None or base is None:
            return value
        path = os.path.abspath(Path(base) / Path(value).expanduser())
        if not Path(path).is_dir():
            raise ValueError(f"a directory relative to the inventory file; {path} is not one")
        return path

    @model_validator(mode="after")
    def _remember_base(self, info: ValidationInfo) -> Inventory:
        base = (info.context or {}).get("base_dir")
        if base is not None:
            self._base_dir = Path(base)
        return self

    def own_dir(self, what: Literal["runbooks", "templates"]) -> Path | None:
        """Return the site's own ``runbooks`` or ``templates`` directory, or None when it has none.

        The inventory's key when given (checked to exist when loaded); else
        ``../sites/<site>/<what>`` beside the inventory file when that exists; None for an
        inventory built in code without a file.
        """
        given = getattr(self, what)
        if given is not None:
            return Path(given)
        if self._base_dir is None:
            return None
        path = Path(os.path.abspath(self._base_dir / SITE_FILES_DEFAULT.format(site=self.site, what=what)))
        return path if path.is_dir() else None

    @model_validator(mode="after")
    def _references(self) -> Inventory:
        problems: list[tuple[KeyPath, str]] = []
        problems += _unique("apps", "name", [a.name for a in self.apps])
        problems += _unique("databases", "name", [d.name for d in self.databases])
        problems += _unique("apps", "domain", [a.domain for a in self.apps])
        problems += _unique("apps", "port", [a.port for a in self.apps])
        dbs = {d.name for d in self.databases}
        apps = {a.name: a for a in self.apps}
        known = ", ".join(sorted(dbs)) or "none"
        for i, app in enumerate(self.apps):
            for j, ref in enumerate(app.databases):
                if ref not in dbs:
                    problems.append(
                        (("apps", i, "databases", j), f"app {app.name!r} refers to database {ref!r}, which does not exist (known: {known})")
                    )
        for i, db in enumerate(self.databases):
            if isinstance(db.runs, ComposeService):
                app = apps.get(db.runs.app)
                if app is None or app.kind != "compose":
                    problems.append(
                        (("databases", i, "runs", "app"), f"database {db.name!r} runs in compose app {db.runs.app!r}, which is not a compose app here")
                    )
                elif app.control.compose_dir is not None:
                    # the engines and the backup runner reach a Compose database through /srv/<app>/compose.yml
                    problems.append(
                        (("databases", i, "runs", "app"), f"database {db.name!r} runs in compose app {db.runs.app!r}, whose "
                         "control.compose_dir is not relaunch's layout: a database inside such a project is not supported "
                         "yet (run it natively, or put the project's compose file at /srv/<app>/compose.yml)")
                    )
        if self.proxy.tls is None:
            for i, app in enumerate(self.apps):
                for j, check in enumerate(app.health):
                    if check.scheme == "https":
                        problems.append(
                            (("apps", i, "health", j, "scheme"), "an https health check needs proxy.tls (the certificate to serve)")
                        )
        if problems:
            _fail(*problems)
        return self

    def app(self, name: str) -> App:
        """Return the app called ``name``. Raise UnknownNameError (an InventoryError and a KeyError) if there is none."""
        for a in self.apps:
            if a.name == name:
                return a
        raise UnknownNameError(Problem("", None, "apps", f"no app named {name!r} (known: {', '.join(a.name for a in self.apps)})"))

    def database(self, name: str) -> Database:
        """Return the database called ``name``. Raise UnknownNameError (an InventoryError and a KeyError) if there is none."""
        for d in self.databases:
            if d.name == name:
                return d
        known = ", ".join(d.name for d in self.databases) or "none"
        raise UnknownNameError(Problem("", None, "databases", f"no database named {name!r} (known: {known})"))


def _unique(section: str, key: str, values: list[object]) -> list[tuple[KeyPath, str]]:
    """Problems for every repeated value, each pointing at the repeat."""
    first: dict[object, int] = {}
    problems: list[tuple[KeyPath, str]] = []
    for i, value in enumerate(values):
        if value in first:
            problems.append(((section, i, key), f"{key} {value!r} is already used by {section}[{first[value]}]; {key}s must be unique"))
        else:
            first[value] = i
    return problems
