#!/usr/bin/env python3
"""notes: a small notes app (notes with tags) on SQLite, the example site's file-database app.

Runs natively under systemd (``notes.service``) from ``/srv/notes/app.py``; its settings
come from ``config.json`` beside this file (rendered from the inventory) and the
environment (the app's env file). The database is one SQLite file in WAL mode, as
self-hosted apps keep it; a backup must copy it consistently (``.backup``/``VACUUM
INTO``), never as a plain file while it is written.

    python3 app.py serve [--port N]     the web app (default when no command is given)
    python3 app.py seed --mb N          fill the database with about N MB of notes

HTTP: ``GET /`` (recent notes), ``GET /notes?tag=T`` (JSON), ``POST /notes`` (JSON
``{"title", "body", "tags": [...]}``), ``GET /health`` -> ``{"notes": N, "db": "ok",
"integrity": "ok", "latest": ...}`` (503 when the database cannot be read).

While serving, a background writer adds a note every ``NOTES_WRITE_INTERVAL`` seconds
(default 10; 0 turns it off), so there is always recent data for an RPO to measure.
Python 3 standard library only.
"""

from __future__ import annotations

import argparse
import html
import json
import logging
import os
import random
import re
import signal
import sqlite3
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

log = logging.getLogger("notes")

HERE = Path(__file__).resolve().parent
DEFAULTS = {"db_path": "/srv/notes/notes.db", "host": "127.0.0.1", "port": 8083}

WORDS = (
    "backup restore server docker compose nginx postgres mariadb sqlite debian upgrade kernel disk "
    "network dns record ttl droplet snapshot volume cron timer systemd journal log metric alert "
    "deploy rollback release patch config secret key certificate domain proxy cache queue worker "
    "the a of to and in is it for on with as was at by this that from or be are have not but what "
    "all were when we there can an your which their said if do will each about how up out them then "
    "she many some so these would other into has more her two like him see time could no make than"
).split()
TAGS = [
    "ops", "todo", "idea", "reading", "infra", "db", "home", "work", "travel", "recipe", "music",
    "books", "garden", "health", "finance", "writing", "photo", "code", "learn", "meeting",
]

SCHEMA = """
CREATE TABLE IF NOT EXISTS notes (
    id INTEGER PRIMARY KEY,
    title TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tags (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS note_tags (
    note_id INTEGER NOT NULL REFERENCES notes(id) ON DELETE CASCADE,
    tag_id INTEGER NOT NULL REFERENCES tags(id),
    PRIMARY KEY (note_id, tag_id)
);
CREATE INDEX IF NOT EXISTS notes_created ON notes(created_at);
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
"""


# --- settings ---------------------------------------------------------------------------


def load_env_file(path: str) -> None:
    """Put KEY=value lines of a systemd/Compose env file into os.environ (existing values win)."""
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        if len(value) >= 2 and value[0] == value[-1] == '"':
            # relaunch writes \\ and \" inside double quotes (relaunch.formats); systemd decodes those
            value = re.sub(r'\\(["\\`$])', r"\1", value[1:-1])
        elif len(value) >= 2 and value[0] == value[-1] == "'":
            value = value[1:-1]
        os.environ.setdefault(key.strip(), value)


def settings() -> dict:
    """Return the settings: defaults, then config.json beside this file, then the environment."""
    conf = dict(DEFAULTS)
    path = HERE / "config.json"
    if path.exists():
        conf.update(json.loads(path.read_text()))
    conf["db_path"] = os.environ.get("NOTES_DB", conf["db_path"])
    conf["write_interval"] = float(os.environ.get("NOTES_WRITE_INTERVAL", "10"))
    return conf


# --- the database -----------------------------------------------------------------------


def connect(path: str) -> sqlite3.Connection:
    """Open the database (WAL, foreign keys, a busy timeout for concurrent writers) with the schema in place."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=10, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=10000")
    conn.executescript(SCHEMA)
    return conn


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def sentence(rng: random.Random, lo: int, hi: int) -> str:
    words = rng.choices(WORDS, k=rng.randint(lo, hi))
    return " ".join(words).capitalize() + "."


def paragraph_text(rng: random.Random, size: int) -> str:
    parts: list[str] = []
    total = 0
    while total < size:
        s = sentence(rng, 6, 18)
        parts.append(s)
        total += len(s) + 1
    return " ".join(parts)


def tag_ids(conn: sqlite3.Connection, names: list[str]) -> list[int]:
    conn.executemany("INSERT OR IGNORE INTO tags(name) VALUES (?)", [(n,) for n in names])
    marks = ",".join("?" * len(names))
    return [r[0] for r in conn.execute(f"SELECT id FROM tags WHERE name IN ({marks})", names)]


def add_note(conn: sqlite3.Connection, title: str, body: str, tags: list[str]) -> int:
    """Insert one note with its tags in one transaction; return its id."""
    ts = now()
    conn.execute("BEGIN IMMEDIATE")
    try:
        cur = conn.execute(
            "INSERT INTO notes(title, body, created_at, updated_at) VALUES (?, ?, ?, ?)", (title, body, ts, ts)
        )
        note_id = int(cur.lastrowid)
        if tags:
            ids = tag_ids(conn, sorted(set(tags)))
            conn.executemany("INSERT OR IGNORE INTO note_tags(note_id, tag_id) VALUES (?, ?)", [(note_id, t) for t in ids])
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return note_id


def health(path: str) -> tuple[int, dict]:
    """Return (HTTP status, body) of /health: counts read from the database and its quick integrity check."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            notes = conn.execute("SELECT COUNT(*) FROM notes").fetchone()[0]
            latest = conn.execute("SELECT MAX(created_at) FROM notes").fetchone()[0]
            integrity = conn.execute("PRAGMA quick_check").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return 503, {"db": "error", "error": str(exc)}
    status = 200 if integrity == "ok" else 503
    return status, {"notes": notes, "db": "ok", "integrity": integrity, "latest": latest}


# --- seeding ----------------------------------------------------------------------------


def seed(path: str, mb: float) -> int:
    """Fill the database with notes until about ``mb`` MB of note text were seeded in all; return bytes added.

    Idempotent-ish: what was seeded is recorded (``meta.seeded_bytes``); seeding again
    to the same size adds nothing, to a larger size only the difference.
    """
    conn = connect(path)
    target = int(mb * 1024 * 1024)
    row = conn.execute("SELECT v FROM meta WHERE k = 'seeded_bytes'").fetchone()
    done = int(row[0]) if row else 0
    if done >= target:
        log.info("already seeded %.1f MB (asked %.1f MB): nothing to do", done / 1048576, mb)
        return 0
    rng = random.Random(done or 1)
    ids = dict(zip(TAGS, tag_ids(conn, TAGS)))
    added = 0
    start = datetime.now(timezone.utc) - timedelta(days=365)
    step = max(1, (target - done) // 10)
    next_report = step
    while done + added < target:
        notes = []
        links = []
        conn.execute("BEGIN IMMEDIATE")
        first = (conn.execute("SELECT COALESCE(MAX(id), 0) FROM notes").fetchone()[0]) + 1
        for i in range(1000):
            title = sentence(rng, 2, 7)[:-1]
            body = "\n\n".join(paragraph_text(rng, rng.randint(200, 900)) for _ in range(rng.randint(1, 4)))
            ts = (start + timedelta(seconds=rng.randint(0, 365 * 86400))).isoformat(timespec="microseconds")
            notes.append((first + i, title, body, ts, ts))
            for tag in rng.sample(TAGS, rng.randint(0, 3)):
                links.append((first + i, ids[tag]))
            added += len(title) + len(body)
            if done + added >= target:
                break
        conn.executemany("INSERT INTO notes(id, title, body, created_at, updated_at) VALUES (?, ?, ?, ?, ?)", notes)
        conn.executemany("INSERT INTO note_tags(note_id, tag_id) VALUES (?, ?)", links)
        conn.execute(
            "INSERT INTO meta(k, v) VALUES ('seeded_bytes', ?) ON CONFLICT(k) DO UPDATE SET v = excluded.v",
            (str(done + added),),
        )
        conn.execute("COMMIT")
        if added >= next_report:
            log.info("seeded %.1f of %.1f MB", (done + added) / 1048576, mb)
            next_report += step
    conn.close()
    log.info("seeding done: %.1f MB of notes added", added / 1048576)
    return added


# --- the web app ------------------------------------------------------------------------


class Handler(BaseHTTPRequestHandler):
    server_version = "notes/1"
    db_path = DEFAULTS["db_path"]

    def log_message(self, fmt: str, *args: object) -> None:
        log.debug("%s %s", self.address_string(), fmt % args)

    def send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def send_json(self, status: int, obj: object) -> None:
        self.send(status, json.dumps(obj).encode() + b"\n")

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        url = urlparse(self.path)
        if url.path == "/health":
            self.send_json(*health(self.db_path))
            return
        try:
            conn = connect(self.db_path)
        except sqlite3.Error as exc:
            self.send_json(503, {"db": "error", "error": str(exc)})
            return
        try:
            if url.path == "/notes":
                tag = parse_qs(url.query).get("tag", [None])[0]
                if tag:
                    rows = conn.execute(
                        "SELECT n.id, n.title, n.created_at FROM notes n JOIN note_tags nt ON nt.note_id = n.id "
                        "JOIN tags t ON t.id = nt.tag_id WHERE t.name = ? ORDER BY n.id DESC LIMIT 100",
                        (tag,),
                    ).fetchall()
                else:
                    rows = conn.execute("SELECT id, title, created_at FROM notes ORDER BY id DESC LIMIT 100").fetchall()
                self.send_json(200, [{"id": r[0], "title": r[1], "created_at": r[2]} for r in rows])
            elif url.path == "/":
                rows = conn.execute("SELECT title, created_at FROM notes ORDER BY id DESC LIMIT 20").fetchall()
                items = "".join(f"<li>{html.escape(t)} <small>{html.escape(c)}</small></li>" for t, c in rows)
                page = f"<!doctype html><title>Notes</title><h1>Notes</h1><ul>{items}</ul>"
                self.send(200, page.encode(), "text/html; charset=utf-8")
            else:
                self.send_json(404, {"error": "not found"})
        finally:
            conn.close()

    def do_POST(self) -> None:  # noqa: N802
        if urlparse(self.path).path != "/notes":
            self.send_json(404, {"error": "not found"})
            return
        try:
            length = int(self.headers.get("Content-Length", "0"))
            data = json.loads(self.rfile.read(min(length, 1 << 20)) or b"{}")
            title, body = str(data["title"]), str(data.get("body", ""))
            tags = [str(t) for t in data.get("tags", [])]
        except (ValueError, KeyError, TypeError) as exc:
            self.send_json(400, {"error": f"expected JSON {{title, body, tags}}: {exc}"})
            return
        conn = connect(self.db_path)
        try:
            self.send_json(201, {"id": add_note(conn, title, body, tags)})
        finally:
            conn.close()


def writer(path: str, interval: float, stop: threading.Event) -> None:
    """Add a note every ``interval`` seconds until ``stop`` is set (errors logged, never fatal)."""
    rng = random.Random()
    conn: sqlite3.Connection | None = None
    while not stop.wait(interval):
        try:
            conn = conn or connect(path)
            add_note(conn, sentence(rng, 2, 6)[:-1], paragraph_text(rng, rng.randint(100, 600)), rng.sample(TAGS, 2))
        except sqlite3.Error as exc:
            log.warning("background note not written: %s", exc)
            conn = None


def serve(conf: dict, host: str, port: int) -> None:
    connect(conf["db_path"]).close()  # schema and WAL mode in place before the first request
    Handler.db_path = conf["db_path"]
    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    stop = threading.Event()
    if conf["write_interval"] > 0:
        threading.Thread(target=writer, args=(conf["db_path"], conf["write_interval"], stop), daemon=True).start()

    def on_term(signum: int, frame: object) -> None:
        stop.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_term)
    log.info("notes on %s:%d, database %s", host, port, conf["db_path"])
    try:
        server.serve_forever()
    finally:
        server.server_close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="notes")
    parser.add_argument("--env-file", help="read settings from this env file (as the service does)")
    sub = parser.add_subparsers(dest="command")
    p_serve = sub.add_parser("serve", help="run the web app")
    p_serve.add_argument("--host")
    p_serve.add_argument("--port", type=int)
    p_seed = sub.add_parser("seed", help="fill the database with about N MB of data")
    p_seed.add_argument("--mb", type=float, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)
    if args.env_file:
        load_env_file(args.env_file)
    conf = settings()
    if args.command == "seed":
        seed(conf["db_path"], args.mb)
        return 0
    serve(conf, getattr(args, "host", None) or conf["host"], getattr(args, "port", None) or int(conf["port"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
