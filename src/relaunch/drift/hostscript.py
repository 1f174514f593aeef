#!/usr/bin/python3
"""relaunch's drift collector: the script that runs ON a host (Python 3 stdlib only), read only.

It is sent on stdin (``python3 -``) by :mod:`relaunch.drift.collect`, with its parameters
(which app trees to list, what to leave out of them) written into the line ``PARAMS = ...``
before it is sent, so no inventory value passes through a shell. It prints one JSON
document, the host's *state manifest*, and changes nothing: it reads files under ``/etc``,
``/var/lib/dpkg``, ``/var/spool/cron`` and ``/proc``, and asks ``systemctl``, ``docker`` and
the database servers (read-only queries: the list of databases) what they hold.

What never leaves the host:

- the content of a file others may not read (``/etc/shadow``, host keys, env and password
  files, TLS keys): it is listed by path and mode only, no checksum (a checksum of a short
  password is a password);
- the environment of a container: the names of its variables only, and the values of those
  whose name does not look secret (``*PASSWORD*``, ``*TOKEN*``, ``*KEY*`` ...) and whose value
  holds no credentials (``scheme://user:pass@``);
- values in env-like files found in the app trees: their keys only;
- what looks like a credential in a cron line (``scheme://user:***@``, ``-p***``,
  ``PASSWORD=***``): masked before it is recorded.

Whatever cannot be read is named in ``errors`` instead of failing the whole collection.
"""

from __future__ import annotations

import base64
import glob
import hashlib
import json
import os
import re
import stat
import subprocess
import sys
import time

PARAMS = {"trees": [], "exclude": [], "root": "/"}  # replaced by relaunch before sending

FORMAT = 1
#: Files larger than this are listed with their size, not hashed (app trees hold data).
HASH_LIMIT = 4 * 1024 * 1024
SECRET_NAME = re.compile(r"(?i)(pass|secret|token|key|credential|auth|private|salt|cookie|session|dsn)")
CREDENTIAL_URL = re.compile(r"://[^/@\s]+:[^/@\s]+@")
NO_LOGIN = ("nologin", "false", "sync", "halt", "shutdown")
UNIT_TYPES = ("service", "timer", "socket", "path")

errors: list[str] = []


def scrub(text: str) -> str:
    """``text`` with what looks like a credential masked (a cron line may carry one)."""
    text = re.sub(r"(://[^/@\s:]+:)[^/@\s]+@", r"\1***@", text)
    text = re.sub(r"(?i)\b([A-Za-z0-9_]*(?:pass|secret|token|key|pwd)[A-Za-z0-9_]*)=(\S+)", r"\1=***", text)
    text = re.sub(r"(\s--?p(?:assword)?)(=?)(?!\s)\S+", r"\1\2***", text)
    return text


def root(path: str) -> str:
    """``path`` under the collection's root (``/`` on a host; a directory in the unit tests)."""
    base = PARAMS.get("root") or "/"
    return path if base == "/" else os.path.join(base, path.lstrip("/"))


def run(argv: list[str], timeout: float = 60, stdin: bytes | None = None) -> str | None:
    """Run ``argv`` (never through a shell); its stdout, or None (and a line in ``errors``) when it failed."""
    try:
        res = subprocess.run(argv, input=stdin, capture_output=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        errors.append(f"{argv[0]}: {exc}")
        return None
    if res.returncode != 0:
        errors.append(f"{' '.join(argv[:3])}: exit {res.returncode}: {res.stderr.decode(errors='replace').strip()[-300:]}")
        return None
    return res.stdout.decode(errors="replace")


def which(name: str) -> bool:
    return any(os.access(os.path.join(d, name), os.X_OK) for d in os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin").split(":"))


def sha256_file(path: str) -> str | None:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as exc:
        errors.append(f"{path}: {exc.strerror}")
        return None
    return digest.hexdigest()


#: Files under /etc this small are hashed with the host's own name taken out (see etc_sha256).
HOST_NAME_LIMIT = 1 << 20


def etc_sha256(path: str, size: int) -> str | None:
    """sha256 of a file under /etc, the host's own name in it replaced by a placeholder.

    Packages write the host's name into their configuration when they are installed (exim4's
    dc_other_hostnames, postfix's myhostname): on a rebuilt host, the same configuration names
    another host. Compared by what they say besides the name, those are no drift.
    """
    name = os.uname().nodename.encode()
    if size > HOST_NAME_LIMIT or len(name) < 3:
        return sha256_file(path)
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        errors.append(f"{path}: {exc.strerror}")
        return None
    if name not in data:
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha256(data.replace(name, b"\0relaunch-host-name\0")).hexdigest()


def is_secret_file(st: os.stat_result) -> bool:
    """A file others may not read is secret: compared by presence, never by content."""
    return not st.st_mode & stat.S_IROTH


# --- packages ---------------------------------------------------------------------------


def packages() -> tuple[dict, dict]:
    """Installed packages {name: {version, manual, priority}} and the owner of every path they installed."""
    auto: set[str] = set()
    try:
        with open(root("/var/lib/apt/extended_states"), encoding="utf-8", errors="replace") as fh:
            name = None
            for line in fh:
                if line.startswith("Package:"):
                    name = line.split(":", 1)[1].strip()
                elif line.startswith("Auto-Installed:") and line.split(":", 1)[1].strip() == "1" and name:
                    auto.add(name)
    except OSError:
        pass
    out: dict[str, dict] = {}
    try:
        with open(root("/var/lib/dpkg/status"), encoding="utf-8", errors="replace") as fh:
            text = fh.read()
    except OSError as exc:
        errors.append(f"/var/lib/dpkg/status: {exc.strerror}")
        text = ""
    for block in text.split("\n\n"):
        fields = {}
        for line in block.splitlines():
            if line and not line[0].isspace() and ":" in line:
                key, value = line.split(":", 1)
                fields[key] = value.strip()
        name = fields.get("Package")
        if name and fields.get("Status", "").endswith(" installed"):
            out[name] = {"version": fields.get("Version", ""), "manual": name not in auto,
                         "priority": fields.get("Priority", "")}
    owners: dict[str, str] = {}
    for listing in glob.glob(root("/var/lib/dpkg/info/*.list")):
        pkg = os.path.basename(listing)[:-5].split(":")[0]
        if pkg in out:
            # when dpkg last unpacked it: files its maintainer scripts made (not in its list) are as recent
            out[pkg]["installed_at"] = int(os.stat(listing).st_mtime)
        try:
            with open(listing, encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    path = line.rstrip("\n")
                    if path and path != "/.":
                        owners.setdefault(path, pkg)
        except OSError:
            continue
    return out, owners


def owner(owners: dict, path: str) -> str | None:
    """The package that installed ``path`` (merged /usr: /bin/x and /usr/bin/x are one file)."""
    if path in owners:
        return owners[path]
    for a, b in (("/usr/bin/", "/bin/"), ("/usr/sbin/", "/sbin/"), ("/usr/lib/", "/lib/")):
        if path.startswith(a) and b + path[len(a):] in owners:
            return owners[b + path[len(a):]]
        if path.startswith(b) and a + path[len(b):] in owners:
            return owners[a + path[len(b):]]
    return None


# --- /etc ---------------------------------------------------------------------------------


def etc_files(owners: dict) -> dict:
    out: dict[str, dict] = {}
    base = root("/etc")
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames.sort()
        for name in sorted(filenames) + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            full = os.path.join(dirpath, name)
            path = "/etc" + full[len(base):]
            try:
                st = os.lstat(full)
            except OSError:
                continue
            entry: dict = {"mode": oct(st.st_mode & 0o7777), "package": owner(owners, path), "changed": int(st.st_ctime)}
            if stat.S_ISLNK(st.st_mode):
                target = os.readlink(full)
                # a link a maintainer script made (alternatives, rc?.d) belongs with what it points to
                resolved = os.path.normpath(os.path.join(os.path.dirname(path), target))
                entry.update(type="link", target=target, target_package=owner(owners, resolved))
            elif stat.S_ISREG(st.st_mode):
                secret = is_secret_file(st)
                entry.update(type="file", secret=secret, sha256=None if secret else etc_sha256(full, st.st_size))
            else:
                continue
            out[path] = entry
    return out


# --- systemd ------------------------------------------------------------------------------


def units(owners: dict) -> dict:
    if not which("systemctl"):
        return {}
    types = "--type=" + ",".join(UNIT_TYPES)
    files = run(["systemctl", "list-unit-files", "--no-legend", "--no-pager", types]) or ""
    states = {}
    for line in files.splitlines():
        parts = line.split()
        if len(parts) >= 2:
            states[parts[0]] = parts[1]
    loaded = run(["systemctl", "list-units", "--all", "--no-legend", "--no-pager", "--plain", types]) or ""
    active = {}
    for line in loaded.splitlines():
        parts = line.split()
        if len(parts) >= 4:
            active[parts[0]] = parts[2]
    wanted = sorted(n for n in set(states) | set(active)
                    if "@." not in n  # a template (getty@.service) is no unit: `systemctl show` refuses it
                    and (states.get(n) in ("enabled", "enabled-runtime", "linked", "linked-runtime")
                    or active.get(n) in ("active", "activating", "reloading")))
    out: dict[str, dict] = {}
    for i in range(0, len(wanted), 100):
        shown = run(["systemctl", "show", "--no-pager", "-p", "Id,FragmentPath,DropInPaths,Triggers,UnitFileState,ActiveState",
                     *wanted[i:i + 100]]) or ""
        for block in shown.split("\n\n"):
            props = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
            name = props.get("Id")
            if not name:
                continue
            fragment = props.get("FragmentPath") or None
            out[name] = {
                "state": props.get("UnitFileState") or states.get(name, ""),
                "active": props.get("ActiveState") or active.get(name, ""),
                "path": fragment,
                "sha256": sha256_file(fragment) if fragment and os.path.isfile(fragment) else None,
                "dropins": {p: sha256_file(p) for p in (props.get("DropInPaths") or "").split() if os.path.isfile(p)},
                "triggers": sorted((props.get("Triggers") or "").split()),
                "package": owner(owners, fragment) if fragment else None,
            }
    return out


# --- cron ---------------------------------------------------------------------------------


def crontabs(owners: dict) -> list:
    out = []
    sources = [root("/etc/crontab")] + sorted(glob.glob(root("/etc/cron.d/*"))) + sorted(glob.glob(root("/var/spool/cron/crontabs/*")))
    base = PARAMS.get("root") or "/"
    for full in sources:
        path = full if base == "/" else "/" + os.path.relpath(full, base)
        if os.path.basename(path).startswith(".") or not os.path.isfile(full):
            continue
        try:
            with open(full, encoding="utf-8", errors="replace") as fh:
                lines = fh.read().splitlines()
        except OSError as exc:
            errors.append(f"{path}: {exc.strerror}")
            continue
        for line in lines:
            text = line.strip()
            if not text or text.startswith("#") or re.match(r"^[A-Za-z_][A-Za-z0-9_]*\s*=", text):
                continue
            out.append({"source": path, "entry": scrub(" ".join(text.split())), "package": owner(owners, path)})
    for period in ("hourly", "daily", "weekly", "monthly"):
        for full in sorted(glob.glob(root(f"/etc/cron.{period}/*"))):
            path = f"/etc/cron.{period}/{os.path.basename(full)}"
            if os.path.basename(full).startswith(".") or os.path.basename(full) == ".placeholder":
                continue
            out.append({"source": path, "entry": f"run-parts {period}: {os.path.basename(full)}", "package": owner(owners, path)})
    return out


# --- ports --------------------------------------------------------------------------------


def _address(hex_addr: str) -> str:
    raw = bytes.fromhex(hex_addr)
    if len(raw) == 4:
        return ".".join(str(b) for b in raw[::-1])
    words = [raw[i:i + 4][::-1] for i in range(0, 16, 4)]
    full = b"".join(words)
    import ipaddress

    return str(ipaddress.IPv6Address(full))


def ports(owners: dict) -> list:
    sockets: dict[str, tuple[str, str, int]] = {}
    for proto, name in (("tcp", "tcp"), ("tcp", "tcp6"), ("udp", "udp"), ("udp", "udp6")):
        try:
            with open(root(f"/proc/net/{name}"), encoding="ascii") as fh:
                rows = fh.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            local, remote, state, inode = cols[1], cols[2], cols[3], cols[9]
            listening = state == "0A" if proto == "tcp" else (state == "07" and remote.split(":")[1] == "0000")
            if not listening:
                continue
            addr, port = local.split(":")
            sockets[inode] = (proto, _address(addr), int(port, 16))
    procs: dict[str, tuple[str, str | None]] = {}
    for fd_dir in glob.glob(root("/proc/[0-9]*/fd")):
        pid_dir = os.path.dirname(fd_dir)
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(os.path.join(fd_dir, fd))
            except OSError:
                continue
            if link.startswith("socket:[") and link[8:-1] in sockets and link[8:-1] not in procs:
                try:
                    with open(os.path.join(pid_dir, "comm"), encoding="utf-8", errors="replace") as fh:
                        comm = fh.read().strip()
                    exe = os.readlink(os.path.join(pid_dir, "exe"))
                except OSError:
                    comm, exe = "?", None
                procs[link[8:-1]] = (comm, exe)
    out = []
    seen = set()
    for inode, (proto, addr, port) in sockets.items():
        comm, exe = procs.get(inode, ("?", None))
        key = (proto, addr, port, comm)
        if key in seen:
            continue
        seen.add(key)
        out.append({"proto": proto, "address": addr, "port": port, "process": comm, "exe": exe,
                    "package": owner(owners, exe) if exe else None})
    return sorted(out, key=lambda p: (p["proto"], p["port"], p["address"], p["process"]))


# --- docker -------------------------------------------------------------------------------


def _env(pairs: list[str]) -> tuple[list[str], dict[str, str]]:
    names, plain = [], {}
    for pair in pairs or []:
        key, _, value = pair.partition("=")
        names.append(key)
        if not SECRET_NAME.search(key) and not CREDENTIAL_URL.search(value):
            plain[key] = value
    return sorted(names), plain


_DB_PROBE = r"""
if command -v psql >/dev/null 2>&1; then
  echo engine=postgresql
  psql -X -A -t -U "${POSTGRES_USER:-postgres}" -d template1 -c 'SELECT datname FROM pg_database WHERE NOT datistemplate'
elif command -v mariadb >/dev/null 2>&1 || command -v mysql >/dev/null 2>&1; then
  echo engine=mariadb
  client=$(command -v mariadb || command -v mysql)
  MYSQL_PWD="${MARIADB_ROOT_PASSWORD:-${MYSQL_ROOT_PASSWORD:-}}" "$client" -uroot -N -B -e 'SHOW DATABASES'
fi
"""


def _databases_in(text: str | None, server: str) -> list:
    if not text:
        return []
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    engine = lines[0].split("=", 1)[1] if lines and lines[0].startswith("engine=") else None
    return [{"server": server, "engine": engine, "name": n} for n in lines[1:]] if engine else []


def docker() -> dict:
    out: dict = {"containers": {}, "images": {}, "volumes": [], "projects": {}, "databases": []}
    if not (which("docker") and os.path.exists(root("/var/run/docker.sock"))):
        return out
    ids = (run(["docker", "ps", "-aq", "--no-trunc"]) or "").split()
    details = json.loads(run(["docker", "inspect", *ids]) or "[]") if ids else []
    image_ids = set()
    for c in details:
        name = c.get("Name", "").lstrip("/")
        labels = (c.get("Config") or {}).get("Labels") or {}
        names, plain = _env((c.get("Config") or {}).get("Env") or [])
        project = labels.get("com.docker.compose.project")
        image_ids.add(c.get("Image"))
        out["containers"][name] = {
            "image": (c.get("Config") or {}).get("Image"), "image_id": c.get("Image"),
            "project": project, "service": labels.get("com.docker.compose.service"),
            "running": bool((c.get("State") or {}).get("Running")),
            "restart": ((c.get("HostConfig") or {}).get("RestartPolicy") or {}).get("Name"),
            "env_names": names, "env": plain,
            "mounts": sorted(f"{m.get('Type')}:{m.get('Name') or m.get('Source')}:{m.get('Destination')}"
                             for m in c.get("Mounts") or []),
            "ports": sorted({f"{b.get('HostIp') or '0.0.0.0'}:{b.get('HostPort')}->{p}"
                             for p, bs in ((c.get("NetworkSettings") or {}).get("Ports") or {}).items() for b in bs or []}),
        }
        if project:
            proj = out["projects"].setdefault(project, {"working_dir": labels.get("com.docker.compose.project.working_dir"),
                                                         "config_files": labels.get("com.docker.compose.project.config_files"),
                                                         "containers": []})
            proj["containers"].append(name)
        if (c.get("State") or {}).get("Running"):
            out["databases"] += _databases_in(run(["docker", "exec", c["Id"], "sh", "-c", _DB_PROBE], timeout=60),
                                              f"container {name}")
    all_images = (run(["docker", "images", "-q", "--no-trunc"]) or "").split()
    image_ids |= set(all_images)
    image_ids.discard(None)
    if image_ids:
        for img in json.loads(run(["docker", "image", "inspect", *sorted(image_ids)]) or "[]"):
            out["images"][img["Id"]] = {"tags": sorted(img.get("RepoTags") or []),
                                        "digests": sorted(img.get("RepoDigests") or [])}
    for c in out["containers"].values():
        img = out["images"].get(c["image_id"]) or {}
        c["digests"] = img.get("digests", [])
    out["volumes"] = sorted((run(["docker", "volume", "ls", "-q"]) or "").split())
    return out


# --- databases on the host ----------------------------------------------------------------


def native_databases() -> list:
    out = []
    sockets = glob.glob(root("/run/mysqld/*.sock")) + glob.glob(root("/var/run/mysqld/*.sock"))
    client = "mariadb" if which("mariadb") else "mysql" if which("mysql") else None
    if sockets and client:
        text = run([client, "-N", "-B", "-e", "SHOW DATABASES"])
        out += [{"server": "native mariadb", "engine": "mariadb", "name": n} for n in (text or "").split()]
    if glob.glob(root("/var/run/postgresql/.s.PGSQL.*")) and which("psql") and which("runuser"):
        for sock in sorted(glob.glob(root("/var/run/postgresql/.s.PGSQL.*"))):
            if sock.endswith(".lock"):
                continue
            port = sock.rsplit(".", 1)[1]
            text = run(["runuser", "-u", "postgres", "--", "psql", "-X", "-A", "-t", "-p", port, "-d", "template1",
                        "-c", "SELECT datname FROM pg_database WHERE NOT datistemplate"])
            out += [{"server": f"native postgresql (port {port})", "engine": "postgresql", "name": n}
                    for n in (text or "").split()]
    return out


# --- users ----------------------------------------------------------------------------------


def _key_fingerprint(line: str) -> str | None:
    parts = line.split()
    for i, part in enumerate(parts):
        if part.startswith(("ssh-", "ecdsa-", "sk-")) and i + 1 < len(parts):
            try:
                blob = base64.b64decode(parts[i + 1])
            except ValueError:
                return None
            fp = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
            comment = " ".join(parts[i + 2:])
            return f"{part} SHA256:{fp}" + (f" {comment}" if comment else "")
    return None


def users() -> dict:
    out = {}
    try:
        with open(root("/etc/passwd"), encoding="utf-8", errors="replace") as fh:
            rows = [line.rstrip("\n").split(":") for line in fh if line.count(":") >= 6]
    except OSError as exc:
        errors.append(f"/etc/passwd: {exc.strerror}")
        return out
    for name, _pw, uid, _gid, _gecos, home, shell in (r[:7] for r in rows):
        keys = []
        for file in ("authorized_keys", "authorized_keys2"):
            try:
                with open(root(os.path.join(home, ".ssh", file)), encoding="utf-8", errors="replace") as fh:
                    keys += [k for k in (_key_fingerprint(line) for line in fh if line.strip() and not line.startswith("#")) if k]
            except OSError:
                continue
        login = bool(shell) and os.path.basename(shell) not in NO_LOGIN
        if login or keys:
            out[name] = {"uid": int(uid), "shell": shell, "home": home, "keys": sorted(keys)}
    return out


# --- nginx ----------------------------------------------------------------------------------


def server_names() -> list:
    out = []
    files = sorted(glob.glob(root("/etc/nginx/sites-enabled/*")) + glob.glob(root("/etc/nginx/conf.d/*.conf")))
    base = PARAMS.get("root") or "/"
    for full in files:
        path = full if base == "/" else "/" + os.path.relpath(full, base)
        try:
            with open(full, encoding="utf-8", errors="replace") as fh:
                text = "\n".join(line.split("#", 1)[0] for line in fh)
        except OSError:
            continue
        for match in re.finditer(r"\bserver_name\s+([^;]+);", text):
            for name in match.group(1).split():
                out.append({"name": name, "file": path})
    return sorted(out, key=lambda s: (s["name"], s["file"]))


# --- app trees ------------------------------------------------------------------------------


def _env_keys(full: str) -> list[str]:
    keys = []
    try:
        with open(full, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                m = re.match(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=", line)
                if m:
                    keys.append(m.group(1))
    except OSError:
        pass
    return keys


def trees() -> dict:
    out: dict[str, dict] = {}
    exclude = [e.rstrip("/") for e in PARAMS.get("exclude") or []]

    def excluded(path: str) -> bool:
        return any(path == e or path.startswith(e + "/") for e in exclude)

    for top in PARAMS.get("trees") or []:
        listing: dict[str, dict] = {}
        base = root(top)
        if not os.path.isdir(base):
            out[top] = listing
            continue
        for dirpath, dirnames, filenames in os.walk(base):
            rel_dir = os.path.relpath(dirpath, base)
            host_dir = top if rel_dir == "." else f"{top}/{rel_dir}"
            dirnames[:] = sorted(d for d in dirnames if not excluded(f"{host_dir}/{d}"))
            for name in sorted(filenames) + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
                path = f"{host_dir}/{name}"
                if excluded(path):
                    continue
                full = os.path.join(dirpath, name)
                try:
                    st = os.lstat(full)
                except OSError:
                    continue
                rel = path[len(top) + 1:]
                entry: dict = {"mode": oct(st.st_mode & 0o7777)}
                if stat.S_ISLNK(st.st_mode):
                    entry.update(type="link", target=os.readlink(full))
                elif stat.S_ISREG(st.st_mode):
                    secret = is_secret_file(st)
                    entry.update(type="file", size=st.st_size, secret=secret,
                                 sha256=None if secret or st.st_size > HASH_LIMIT else sha256_file(full))
                    if name.endswith(".env") or name in (".env", "env", "environment"):
                        entry["env_keys"] = _env_keys(full)
                else:
                    continue
                listing[rel] = entry
        out[top] = listing
    return out


def main() -> None:
    started = time.monotonic()
    pkgs, owners = packages()
    manifest = {
        "format": FORMAT,
        "hostname": os.uname().nodename,
        "collected_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "packages": pkgs,
        "etc": etc_files(owners),
        "units": units(owners),
        "cron": crontabs(owners),
        "ports": ports(owners),
        "users": users(),
        "server_names": server_names(),
        "trees": trees(),
    }
    found = docker()
    manifest["databases"] = native_databases() + found.pop("databases")
    manifest.update(found)
    manifest["seconds"] = round(time.monotonic() - started, 2)
    manifest["errors"] = errors
    json.dump(manifest, sys.stdout, sort_keys=True)


if __name__ == "__main__":
    main()
