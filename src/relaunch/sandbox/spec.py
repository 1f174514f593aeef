"""DigitalOcean's official OpenAPI spec: load it, and check HTTP answers against it.

Needs the ``test`` extra (openapi-core 0.23). The spec is the split one from
``github.com/digitalocean/openapi`` (``specification/DigitalOcean-public.v2.yaml`` and the
files it references, at the commit ``SPEC_COMMIT``), found in ``RELAUNCH_DO_OPENAPI_DIR`` or
in ``<repo>/../shared/digitalocean-openapi``. A user's clone may have neither: whether a
missing spec is an error is ``spec_required``'s answer, and ``how_to_get`` says where it comes from.

Two things make it load: the few tag ``description:`` values that are themselves
``{$ref: ...}`` are replaced by plain strings (openapi-core wants strings there), and
every YAML file is read as YAML 1.2 booleans (only true/false), because PyYAML's YAML 1.1
rules turn the Droplet status ``off`` into ``False`` and then no "off" Droplet validates.
References are resolved from local files only; nothing is fetched.
"""

from __future__ import annotations

import functools
import json
import os
import re
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import parse_qs, urlsplit

import yaml

SPEC_ENV = "RELAUNCH_DO_OPENAPI_DIR"
#: Set to 1 to make a missing spec an error (it already is when the shared copy is beside the clone).
REQUIRE_ENV = "RELAUNCH_REQUIRE_SPEC"
#: The official repository, and the commit the sandbox's answers were checked against.
SPEC_REPOSITORY = "https://github.com/digitalocean/openapi"
SPEC_COMMIT = "7c1300c479fed9c353cda9fc21cd968619552304"
ROOT_FILE = Path("specification") / "DigitalOcean-public.v2.yaml"
#: The spec's own server; answers are checked as if they came from there.
SPEC_HOST = "https://api.digitalocean.com"


class SpecNotFound(FileNotFoundError):
    """The spec directory is not where it is expected."""


class ResponseMismatch(AssertionError):
    """An answer does not match the spec; the message says where and why."""


def _this_clone() -> Path:
    return Path(__file__).resolve().parents[3]


def shared_spec_dir(repo: Path | None = None) -> Path:
    """Return where the shared copy of the spec lives beside the clone ``repo`` (default: this one).

    ``<repo>/../shared/digitalocean-openapi``, also where CI puts it.
    """
    return (repo or _this_clone()).parent / "shared" / "digitalocean-openapi"


def spec_dir(repo: Path | None = None) -> Path:
    """Return the directory holding the spec (with ``specification/`` inside).

    ``RELAUNCH_DO_OPENAPI_DIR`` wins; else ``shared_spec_dir(repo)``. Raise SpecNotFound
    (its message says how to get the spec) when the root file is not there.
    """
    env = os.environ.get(SPEC_ENV)
    candidate = Path(env) if env else shared_spec_dir(repo)
    if not (candidate / ROOT_FILE).is_file():
        raise SpecNotFound(f"no {ROOT_FILE} in {candidate}; {how_to_get(repo)}")
    return candidate


def spec_required(repo: Path | None = None) -> bool:
    """Return True when a missing spec must be an error, not a reason to skip.

    So when ``RELAUNCH_REQUIRE_SPEC=1``, or when the shared copy's directory exists beside
    the clone ``repo`` (CI has it: there a contract test must never pass by skipping).
    """
    if os.environ.get(REQUIRE_ENV, "").strip().lower() in {"1", "true", "yes"}:
        return True
    return shared_spec_dir(repo).is_dir()


def how_to_get(repo: Path | None = None) -> str:
    """Say, in one line, how to get the spec where the clone ``repo`` looks for it."""
    target = shared_spec_dir(repo)
    return (f"get it with: git clone {SPEC_REPOSITORY} {target} && git -C {target} checkout {SPEC_COMMIT}"
            f" (or set {SPEC_ENV} to a copy of that commit)")


def _yaml12_loader() -> type:
    """A safe loader (timestamps left as strings, like jsonschema-path's) whose booleans are YAML 1.2's."""
    base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    class Loader(base):  # type: ignore[misc, valid-type]
        pass

    dropped = ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:timestamp")
    Loader.yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag not in dropped]
        for first, resolvers in base.yaml_implicit_resolvers.items()
    }
    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
    )
    return Loader


def _plain_descriptions(root: dict[str, Any]) -> None:
    # Only the root's tags carry {$ref} descriptions (the intro texts); schemas with a
    # property *named* description are left alone.
    for tag in root.get("tags", []):
        if isinstance(tag.get("description"), dict):
            tag["description"] = ""


@functools.lru_cache(maxsize=4)
def load_spec(directory: Path | None = None) -> Any:
    """Return the spec as an openapi-core ``OpenAPI`` object (cached per directory)."""
    from jsonschema_path import SchemaPath
    from jsonschema_path.handlers.file import FileHandler
    from jsonschema_path.handlers.urllib import UrllibHandler
    from openapi_core import Config, OpenAPI

    root_path = (directory or spec_dir()) / ROOT_FILE
    loader = _yaml12_loader()
    root = yaml.load(root_path.read_text(encoding="utf-8"), Loader=loader)
    _plain_descriptions(root)
    handlers = {"file": UrllibHandler("file", file_handler=FileHandler(loader=loader))}
    schema_path = SchemaPath.from_dict(root, base_uri=root_path.resolve().as_uri(), handlers=handlers)
    return OpenAPI(schema_path, config=Config(spec_validator_cls=None))


def check_response(
    method: str,
    url: str,
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    spec: Any = None,
) -> None:
    """Check one answer (status, headers, JSON body) against the operation of ``method url``.

    ``url`` is the one the client asked (any host; its ``/v2/...`` path and query are
    used, a trailing slash dropped). Raise ResponseMismatch naming the operation and every
    schema error; raise nothing when it matches.
    """
    from openapi_core.testing import MockRequest, MockResponse

    spec = spec or load_spec()
    split = urlsplit(url)
    path = split.path.rstrip("/") or "/"
    query = {k: v[-1] for k, v in parse_qs(split.query).items()}
    request = MockRequest(SPEC_HOST, method, path, args=query)
    content_type = headers.get("Content-Type", headers.get("content-type", "application/json"))
    response = MockResponse(body, status_code=status, headers=dict(headers),
                            content_type=content_type.split(";")[0].strip())
    try:
        spec.validate_response(request, response)
    except Exception as exc:  # openapi-core raises several unrelated types
        raise ResponseMismatch(f"{method.upper()} {path} -> {status}: {_explain(exc)}\nbody: {_short(body)}") from exc


def _explain(exc: BaseException) -> str:
    parts = [f"{type(exc).__name__}: {exc}"]
    for sub in getattr(exc, "schema_errors", None) or []:
        where = "/".join(str(p) for p in getattr(sub, "absolute_path", []))
        parts.append(f"  at {where or '<root>'}: {getattr(sub, 'message', sub)}")
        for ctx in getattr(sub, "context", None) or []:
            cwhere = "/".join(str(p) for p in ctx.absolute_path)
            parts.append(f"    - at {cwhere or '<root>'}: {ctx.message}")
    cause = exc.__cause__
    if cause is not None and cause is not exc:
        parts.append(_explain(cause))
    return "\n".join(parts)


def _short(body: bytes) -> str:
    try:
        text = json.dumps(json.loads(body))
    except ValueError:
        text = body.decode("utf-8", "replace")
    return text if len(text) < 2000 else text[:2000] + "..."
