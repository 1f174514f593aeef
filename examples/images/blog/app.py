#!/usr/bin/env python3
"""blog: the example site's blog (posts, comments, page views, uploads) on PostgreSQL.

Runs in the Docker image ``example/blog`` as the ``web`` service of the blog's Compose
project, next to ``db`` (image ``example/postgres``). Settings come from the environment
(the app's env file, passed by Compose): ``POSTGRES_PASSWORD``, and ``BLOG_DB_HOST``
(default ``db``), ``BLOG_DB_NAME``/``BLOG_DB_USER`` (default ``blog``), ``BLOG_UPLOADS``
(default ``/srv/blog/uploads``, a bind mount of the host's directory), ``BLOG_THUMBS`` (default
``/var/lib/blog/thumbs``, the Compose project's named volume ``thumbs``).

    python3 /app/app.py serve [--host H] [--port N]   the web app (the image's command)
    python3 /app/app.py seed --mb N                   about N MB: half rows, half upload files (and the thumbnails)

Uploads are files under ``BLOG_UPLOADS`` with their metadata (name, size, sha256) in the
``uploads`` table, the way self-hosted apps keep them: a restore needs both, and they
must agree. Thumbnails live in a Docker named volume instead (the other way apps keep
files): a few small files the seed puts there, with a subdirectory, a hard link, symlinks to
a file and to a directory, and files owned by another user than root with their own modes,
so that a rebuild proves a volume's files arrive with their owners, modes and links.

HTTP: ``GET /`` recent posts, ``GET /posts/<id>`` a post (counts a page view),
``POST /posts`` (JSON ``{"title", "body"}``), ``POST /posts/<id>/comments`` (JSON
``{"author", "body"}``), ``POST /uploads?name=N`` (raw body), ``GET /uploads/<id>``,
``GET /health`` -> ``{"posts": N, "comments": C, "uploads": M, "db": "ok", "latest": ...}``
read from the database (503 when it does not answer).

While serving, a background writer adds a comment every ``BLOG_COMMENT_INTERVAL`` seconds
(default 10; 0 turns it off), so there is always recent data for an RPO to measure.
Needs python3-psycopg2.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import html
import io
import json
import logging
import os
import random
import re
import signal
import sys
import threading
import uuid
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import psycopg2
import psycopg2.extras

log = logging.getLogger("blog")

WORDS = (
    "backup restore server docker compose nginx postgres mariadb sqlite debian upgrade kernel disk "
    "network dns record ttl droplet snapshot volume cron timer systemd journal log metric alert "
    "deploy rollback release patch config secret key certificate domain proxy cache queue worker "
    "the a of to and in is it for on with as was at by this that from or be are have not but what "
    "all were when we there can an your which their said if do will each about how up out them then "
    "she many some so these would other into has more her two like him see time could no make than"
).split()
AUTHORS = ["ana", "bo", "chen", "dara", "eli", "fatima", "gus", "hana", "ivo", "jules", "kim", "lea"]
UPLOAD_KINDS = [("image/jpeg", ".jpg"), ("image/png", ".png"), ("application/pdf", ".pdf")]

SCHEMA = """
CREATE TABLE IF NOT EXISTS posts (
    id BIGSERIAL PRIMARY KEY,
    title TEXT NOT NULL,
    slug TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS comments (
    id BIGSERIAL PRIMARY KEY,
    post_id BIGINT NOT NULL REFERENCES posts(id) ON DELETE CASCADE,
    author TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS comments_post ON comments(post_id);
CREATE TABLE IF NOT EXISTS page_views (
    id BIGSERIAL PRIMARY KEY,
    post_id BIGINT REFERENCES posts(id) ON DELETE SET NULL,
    ts TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS uploads (
    id BIGSERIAL PRIMARY KEY,
    filename TEXT NOT NULL,
    stored_name TEXT NOT NULL UNIQUE,
    content_type TEXT NOT NULL,
    size BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
"""


def settings() -> dict:
    """Return the settings from the environment (see the module docstring)."""
    return {
        "host": os.environ.get("BLOG_DB_HOST", "db"),
        "dbname": os.environ.get("BLOG_DB_NAME", "blog"),
        "user": os.environ.get("BLOG_DB_USER", "blog"),
        "password": os.environ.get("POSTGRES_PASSWORD", ""),
        "uploads": os.environ.get("BLOG_UPLOADS", "/srv/blog/uploads"),
        "thumbs": os.environ.get("BLOG_THUMBS", "/var/lib/blog/thumbs"),
        "comment_interval": float(os.environ.get("BLOG_COMMENT_INTERVAL", "10")),
    }


def connect(conf: dict):
    """Open a connection to the blog's database (the password from the environment, never argv)."""
    return psycopg2.connect(
        host=conf["host"], dbname=conf["dbname"], user=conf["user"], password=conf["password"], connect_timeout=3
    )


def ensure_schema(conf: dict) -> None:
    conn = connect(conf)
    try:
        with conn, conn.cursor() as cur:
            # one app instance at a time creates the tables (seed and serve may race)
            cur.execute("SELECT pg_advisory_xact_lock(4242)")
            cur.execute(SCHEMA)
    finally:
        conn.close()


def sentence(rng: random.Random, lo: int, hi: int) -> str:
    return " ".join(rng.choices(WORDS, k=rng.randint(lo, hi))).capitalize() + "."


def text_of(rng: random.Random, size: int) -> str:
    parts: list[str] = []
    total = 0
    while total < size:
        s = sentence(rng, 6, 18)
        parts.append(s)
        total += len(s) + 1
    return " ".join(parts)


def slugify(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:80] or "post"


def health(conf: dict) -> tuple[int, dict]:
    """Return (HTTP status, body) of /health: counts read from the database (503 if it does not answer)."""
    try:
        conn = connect(conf)
        try:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT (SELECT COUNT(*) FROM posts), (SELECT COUNT(*) FROM comments), (SELECT COUNT(*) FROM uploads),"
                    " (SELECT MAX(created_at) FROM comments)"
                )
                posts, comments, uploads, latest = cur.fetchone()
        finally:
            conn.close()
    except psycopg2.Error as exc:
        return 503, {"db": "error", "error": str(exc).strip()}
    return 200, {
        "posts": posts,
        "comments": comments,
        "uploads": uploads,
        "db": "ok",
        "latest": latest.isoformat() if latest else None,
    }


def store_upload(conf: dict, cur, filename: str, content_type: str, data: bytes, created_at: datetime | None = None) -> int:
    """Write an upload's file (atomically: temp file, then rename) and its metadata row; return its id."""
    stored = uuid.uuid4().hex
    directory = Path(conf["uploads"]) / stored[:2]
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{stored}.tmp"
    tmp.write_bytes(data)
    os.replace(tmp, directory / stored)
    cur.execute(
        "INSERT INTO uploads (filename, stored_name, content_type, size, sha256, created_at)"
        " VALUES (%s, %s, %s, %s, %s, COALESCE(%s, now())) RETURNING id",
        (filename, f"{stored[:2]}/{stored}", content_type, len(data), hashlib.sha256(data).hexdigest(), created_at),
    )
    return cur.fetchone()[0]


# --- seeding ----------------------------------------------------------------------------


def _copy(cur, table: str, columns: list[str], rows: list[tuple]) -> None:
    """COPY rows into a table (CSV), the fast path for bulk loads."""
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    buf.seek(0)
    cur.copy_expert(f"COPY {table} ({', '.join(columns)}) FROM STDIN WITH (FORMAT csv)", buf)


#: www-data in Debian: the owner of the thumbnails' private part (anything but root).
THUMBS_OWNER = 33


def seed_thumbs(root: str) -> int:
    """Put the thumbnails in ``root`` as they should be (every run: same names, contents, owners, modes); return files.

    ``2026/a.jpg`` and ``2026/b.png`` (bytes of a fixed seed), ``2026/a-copy.jpg`` a hard link
    to ``a.jpg``, ``latest.jpg`` -> ``2026/a.jpg`` and ``current`` -> ``2026`` (symlinks),
    ``private/`` (0750) and ``private/cache.bin`` (0640) owned by uid/gid 33.
    """
    rng = random.Random(7)
    year = os.path.join(root, "2026")
    private = os.path.join(root, "private")
    os.makedirs(year, exist_ok=True)
    os.makedirs(private, exist_ok=True)
    files = {os.path.join(year, "a.jpg"): rng.randbytes(3000), os.path.join(year, "b.png"): rng.randbytes(5000),
             os.path.join(private, "cache.bin"): rng.randbytes(2000)}
    for path, data in files.items():
        tmp = path + ".tmp"
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    copy = os.path.join(year, "a-copy.jpg")
    if os.path.lexists(copy):
        os.unlink(copy)
    os.link(os.path.join(year, "a.jpg"), copy)
    for name, target in (("latest.jpg", "2026/a.jpg"), ("current", "2026")):
        link = os.path.join(root, name)
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink(target, link)
    os.chown(private, THUMBS_OWNER, THUMBS_OWNER)
    os.chmod(private, 0o750)
    os.chown(os.path.join(private, "cache.bin"), THUMBS_OWNER, THUMBS_OWNER)
    os.chmod(os.path.join(private, "cache.bin"), 0o640)
    return len(files) + 1


def seed(conf: dict, mb: float) -> int:
    """Fill the blog with about ``mb`` MB: half posts/comments/page views (rows), half upload files.

    Idempotent-ish: what was seeded is recorded (``meta.seeded_bytes``); seeding again to
    the same size adds nothing, to a larger size only the difference. Return bytes added.
    """
    log.info("thumbnails: %d files in %s", seed_thumbs(conf["thumbs"]), conf["thumbs"])
    ensure_schema(conf)
    conn = connect(conf)
    target = int(mb * 1024 * 1024)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT v FROM meta WHERE k = 'seeded_bytes'")
        row = cur.fetchone()
    done = int(row[0]) if row else 0
    if done >= target:
        log.info("already seeded %.1f MB (asked %.1f MB): nothing to do", done / 1048576, mb)
        conn.close()
        return 0
    rng = random.Random(done or 3)
    want = target - done
    start = datetime.now(timezone.utc) - timedelta(days=3 * 365)
    rows_budget, files_budget = want // 2, want - want // 2
    added_rows = added_files = 0
    # rows: posts with their comments and page views, batch by batch
    while added_rows < rows_budget:
        with conn, conn.cursor() as cur:
            posts = []
            for _ in range(50):
                title = sentence(rng, 3, 9)[:-1]
                body = "\n\n".join(text_of(rng, rng.randint(400, 1500)) for _ in range(rng.randint(2, 6)))
                ts = start + timedelta(seconds=rng.randint(0, 3 * 365 * 86400))
                posts.append((title, slugify(title), body, ts.isoformat()))
                added_rows += len(title) * 2 + len(body) + 30
                if added_rows >= rows_budget:
                    break
            cur.execute("SELECT COALESCE(MAX(id), 0) FROM posts")
            (before,) = cur.fetchone()
            _copy(cur, "posts", ["title", "slug", "body", "created_at"], posts)
            cur.execute("SELECT id, created_at FROM posts WHERE id > %s", (before,))
            fresh = cur.fetchall()
            comments, views = [], []
            for post_id, created in fresh:
                for _ in range(rng.randint(0, 8)):
                    body = text_of(rng, rng.randint(40, 400))
                    comments.append((post_id, rng.choice(AUTHORS), body, (created + timedelta(hours=rng.randint(1, 2000))).isoformat()))
                    added_rows += len(body) + 40
                for _ in range(rng.randint(5, 40)):
                    views.append((post_id, (created + timedelta(minutes=rng.randint(1, 500000))).isoformat()))
                    added_rows += 24
            _copy(cur, "comments", ["post_id", "author", "body", "created_at"], comments)
            _copy(cur, "page_views", ["post_id", "ts"], views)
            cur.execute(
                "INSERT INTO meta (k, v) VALUES ('seeded_bytes', %s) ON CONFLICT (k) DO UPDATE SET v = excluded.v",
                (str(done + added_rows + added_files),),
            )
        log.info("seeded %.1f MB of rows (of %.1f)", added_rows / 1048576, rows_budget / 1048576)
    # files: uploads of 20-400 KB, incompressible like the photos and PDFs people upload
    while added_files < files_budget:
        with conn, conn.cursor() as cur:
            for _ in range(50):
                kind, ext = rng.choice(UPLOAD_KINDS)
                size = min(rng.randint(20_000, 400_000), max(1024, files_budget - added_files))
                ts = start + timedelta(seconds=rng.randint(0, 3 * 365 * 86400))
                store_upload(conf, cur, f"{slugify(sentence(rng, 1, 3))}{ext}", kind, rng.randbytes(size), ts)
                added_files += size
                if added_files >= files_budget:
                    break
            cur.execute(
                "INSERT INTO meta (k, v) VALUES ('seeded_bytes', %s) ON CONFLICT (k) DO UPDATE SET v = excluded.v",
                (str(done + added_rows + added_files),),
            )
        log.info("seeded %.1f MB of upload files (of %.1f)", added_files / 1048576, files_budget / 1048576)
    conn.close()
    log.info("seeding done: %.1f MB of rows, %.1f MB of files", added_rows / 1048576, added_files / 1048576)
    return added_rows + added_files


# --- the web app ------------------------------------------------------------------------


class Handler(BaseHTTPRequestHandler):
    server_version = "blog/1"
    conf: dict = {}

    def log_message(self, fmt: str, *args: object) -> None:
        log.debug("%s %s", self.address_string(), fmt % args)

    def send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def send_json(self, status: int, obj: object) -> None:
        self.send(status, json.dumps(obj, default=str).encode() + b"\n")

    def body(self, limit: int) -> bytes:
        length = int(self.headers.get("Content-Length", "0"))
        if length > limit:
            raise ValueError(f"body larger than {limit} bytes")
        return self.rfile.read(length)

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        url = urlparse(self.path)
        if url.path == "/health":
            self.send_json(*health(self.conf))
            return
        try:
            conn = connect(self.conf)
        except psycopg2.Error as exc:
            self.send_json(503, {"db": "error", "error": str(exc).strip()})
            return
        try:
            with conn, conn.cursor() as cur:
                if url.path == "/":
                    cur.execute("SELECT id, title, created_at FROM posts ORDER BY created_at DESC LIMIT 20")
                    items = "".join(
                        f'<li><a href="/posts/{i}">{html.escape(t)}</a> <small>{c:%Y-%m-%d}</small></li>' for i, t, c in cur
                    )
                    self.send(200, f"<!doctype html><title>Blog</title><h1>Blog</h1><ul>{items}</ul>".encode(), "text/html; charset=utf-8")
                elif m := re.fullmatch(r"/posts/(\d+)", url.path):
                    cur.execute("SELECT title, body, created_at FROM posts WHERE id = %s", (int(m[1]),))
                    row = cur.fetchone()
                    if row is None:
                        self.send_json(404, {"error": "no such post"})
                        return
                    cur.execute("INSERT INTO page_views (post_id) VALUES (%s)", (int(m[1]),))
                    cur.execute("SELECT author, body FROM comments WHERE post_id = %s ORDER BY id", (int(m[1]),))
                    comments = "".join(f"<li><b>{html.escape(a)}</b>: {html.escape(b)}</li>" for a, b in cur)
                    page = f"<!doctype html><title>{html.escape(row[0])}</title><h1>{html.escape(row[0])}</h1><p>{html.escape(row[1])}</p><ul>{comments}</ul>"
                    self.send(200, page.encode(), "text/html; charset=utf-8")
                elif m := re.fullmatch(r"/uploads/(\d+)", url.path):
                    cur.execute("SELECT stored_name, content_type FROM uploads WHERE id = %s", (int(m[1]),))
                    row = cur.fetchone()
                    path = Path(self.conf["uploads"]) / row[0] if row else None
                    if path is None or not path.is_file():
                        self.send_json(404, {"error": "no such upload"})
                        return
                    self.send(200, path.read_bytes(), row[1])
                else:
                    self.send_json(404, {"error": "not found"})
        finally:
            conn.close()

    def do_POST(self) -> None:  # noqa: N802
        url = urlparse(self.path)
        try:
            conn = connect(self.conf)
        except psycopg2.Error as exc:
            self.send_json(503, {"db": "error", "error": str(exc).strip()})
            return
        try:
            with conn, conn.cursor() as cur:
                if url.path == "/posts":
                    data = json.loads(self.body(1 << 20))
                    title = str(data["title"])
                    cur.execute(
                        "INSERT INTO posts (title, slug, body) VALUES (%s, %s, %s) RETURNING id",
                        (title, slugify(title), str(data.get("body", ""))),
                    )
                    self.send_json(201, {"id": cur.fetchone()[0]})
                elif m := re.fullmatch(r"/posts/(\d+)/comments", url.path):
                    data = json.loads(self.body(1 << 16))
                    cur.execute(
                        "INSERT INTO comments (post_id, author, body) VALUES (%s, %s, %s) RETURNING id",
                        (int(m[1]), str(data.get("author", "anonymous")), str(data["body"])),
                    )
                    self.send_json(201, {"id": cur.fetchone()[0]})
                elif url.path == "/uploads":
                    name = parse_qs(url.query).get("name", ["upload.bin"])[0]
                    data = self.body(20 << 20)
                    ctype = self.headers.get("Content-Type", "application/octet-stream")
                    self.send_json(201, {"id": store_upload(self.conf, cur, Path(name).name, ctype, data)})
                else:
                    self.send_json(404, {"error": "not found"})
        except (ValueError, KeyError, TypeError) as exc:
            self.send_json(400, {"error": str(exc)})
        except psycopg2.IntegrityError as exc:
            self.send_json(409, {"error": str(exc).strip()})
        finally:
            conn.close()


def writer(conf: dict, interval: float, stop: threading.Event) -> None:
    """Add a comment (to a post, made first if there is none) every ``interval`` seconds until ``stop``."""
    rng = random.Random()
    while not stop.wait(interval):
        try:
            conn = connect(conf)
            try:
                with conn, conn.cursor() as cur:
                    cur.execute("SELECT id FROM posts ORDER BY id DESC LIMIT 1")
                    row = cur.fetchone()
                    if row is None:
                        title = "Hello, world"
                        cur.execute(
                            "INSERT INTO posts (title, slug, body) VALUES (%s, %s, %s) RETURNING id",
                            (title, slugify(title), text_of(rng, 800)),
                        )
                        row = cur.fetchone()
                    cur.execute(
                        "INSERT INTO comments (post_id, author, body) VALUES (%s, %s, %s)",
                        (row[0], rng.choice(AUTHORS), text_of(rng, rng.randint(40, 300))),
                    )
            finally:
                conn.close()
        except psycopg2.Error as exc:
            log.warning("background comment not written: %s", str(exc).strip())


def wait_for_schema(conf: dict, stop: threading.Event) -> None:
    """Create the tables once PostgreSQL answers (it starts beside this app); retry every second."""
    while not stop.is_set():
        try:
            ensure_schema(conf)
            return
        except psycopg2.Error as exc:
            log.info("database not ready (%s); retrying", str(exc).strip().splitlines()[0] if str(exc).strip() else exc)
            stop.wait(1)


def serve(conf: dict, host: str, port: int) -> None:
    Handler.conf = conf
    Path(conf["uploads"]).mkdir(parents=True, exist_ok=True)
    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    stop = threading.Event()

    def on_term(signum: int, frame: object) -> None:
        # PID 1 in a container: without a handler SIGTERM would be ignored
        stop.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)

    def background() -> None:
        wait_for_schema(conf, stop)
        if conf["comment_interval"] > 0:
            writer(conf, conf["comment_interval"], stop)

    threading.Thread(target=background, daemon=True).start()
    log.info("blog on %s:%d, database %s at %s", host, port, conf["dbname"], conf["host"])
    try:
        server.serve_forever()
    finally:
        server.server_close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="blog")
    sub = parser.add_subparsers(dest="command")
    p_serve = sub.add_parser("serve", help="run the web app")
    p_serve.add_argument("--host", default="0.0.0.0")
    p_serve.add_argument("--port", type=int, default=8080)
    p_seed = sub.add_parser("seed", help="fill the blog with about N MB of data")
    p_seed.add_argument("--mb", type=float, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)
    conf = settings()
    if args.command == "seed":
        seed(conf, args.mb)
        return 0
    serve(conf, getattr(args, "host", "0.0.0.0"), getattr(args, "port", 8080))
    return 0


if __name__ == "__main__":
    sys.exit(main())
