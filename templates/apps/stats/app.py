#!/usr/bin/env python3
"""stats: the example site's statistics (page views and daily aggregates) on the host's MariaDB.

Runs natively under systemd (``stats.service``) from ``/srv/stats/app.py``; database name,
user and socket come from ``config.json`` beside this file (rendered from the
inventory), the password from ``STATS_DB_PASSWORD`` (the app's 0600 env file).

    python3 app.py [--env-file F] serve [--port N]   the web app (default)
    python3 app.py [--env-file F] seed --mb N        fill the database with about N MB of page views

HTTP: ``GET /hit?path=/p`` records a page view (referrer and user agent from the request,
as a tracking pixel would), ``GET /`` today's top paths, ``GET /daily.json`` the daily
aggregates, ``GET /health`` -> ``{"views": N, "days": D, "db": "ok", "latest": ...}``
(503 when the database does not answer).

While serving, a background writer records a page view every ``STATS_WRITE_INTERVAL``
seconds (default 2; 0 turns it off), so there is always recent data for an RPO to
measure. Needs python3-pymysql.
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
import sys
import threading
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pymysql

log = logging.getLogger("stats")

HERE = Path(__file__).resolve().parent
DEFAULTS = {"db_name": "stats", "db_user": "stats", "db_socket": "/run/mysqld/mysqld.sock", "host": "127.0.0.1", "port": 8082}

PATHS = ["/", "/about", "/feed.xml", "/archive"] + [f"/posts/{i}" for i in range(1, 120)]
REFERRERS = ["", "", "", "https://news.example.org/", "https://search.example.com/?q=relaunch", "https://social.example.net/@someone"]
AGENTS = [
    "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15",
    "curl/7.88.1",
    "Feedly/1.0 (+http://www.feedly.com/fetcher.html)",
]

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS page_views (
        id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
        path VARCHAR(255) NOT NULL,
        referrer VARCHAR(512) NOT NULL DEFAULT '',
        user_agent VARCHAR(512) NOT NULL DEFAULT '',
        ts DATETIME(6) NOT NULL,
        KEY page_views_ts (ts)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
    """CREATE TABLE IF NOT EXISTS daily (
        day DATE NOT NULL,
        path VARCHAR(255) NOT NULL,
        views INT UNSIGNED NOT NULL,
        PRIMARY KEY (day, path)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
    """CREATE TABLE IF NOT EXISTS meta (
        k VARCHAR(64) NOT NULL PRIMARY KEY,
        v TEXT NOT NULL
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
]


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
    conf["db_host"] = os.environ.get("STATS_DB_HOST")  # TCP instead of the socket when set
    conf["password"] = os.environ.get("STATS_DB_PASSWORD", "")
    conf["write_interval"] = float(os.environ.get("STATS_WRITE_INTERVAL", "2"))
    return conf


# --- the database -----------------------------------------------------------------------


def connect(conf: dict) -> pymysql.connections.Connection:
    """Open a connection (the local socket unless STATS_DB_HOST is set), autocommit on."""
    where = {"host": conf["db_host"]} if conf.get("db_host") else {"unix_socket": conf["db_socket"]}
    return pymysql.connect(
        user=conf["db_user"],
        password=conf["password"],
        database=conf["db_name"],
        charset="utf8mb4",
        autocommit=True,
        connect_timeout=5,
        read_timeout=30,
        write_timeout=30,
        **where,
    )


def ensure_schema(conf: dict) -> None:
    conn = connect(conf)
    try:
        with conn.cursor() as cur:
            for statement in SCHEMA:
                cur.execute(statement)
    finally:
        conn.close()


def record_view(conn: pymysql.connections.Connection, path: str, referrer: str, agent: str) -> None:
    """Record one page view and bump its day's aggregate, in one transaction."""
    ts = datetime.now(timezone.utc).replace(tzinfo=None)
    conn.begin()
    try:
        with conn.cursor() as cur:
            cur.execute(
                "INSERT INTO page_views (path, referrer, user_agent, ts) VALUES (%s, %s, %s, %s)",
                (path[:255], referrer[:512], agent[:512], ts),
            )
            cur.execute(
                "INSERT INTO daily (day, path, views) VALUES (%s, %s, 1) ON DUPLICATE KEY UPDATE views = views + 1",
                (ts.date(), path[:255]),
            )
        conn.commit()
    except BaseException:
        conn.rollback()
        raise


def health(conf: dict) -> tuple[int, dict]:
    """Return (HTTP status, body) of /health, with counts read from the database."""
    try:
        conn = connect(conf)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT COUNT(*), MAX(ts) FROM page_views")
                views, latest = cur.fetchone()
                cur.execute("SELECT COUNT(DISTINCT day) FROM daily")
                (days,) = cur.fetchone()
        finally:
            conn.close()
    except pymysql.MySQLError as exc:
        return 503, {"db": "error", "error": str(exc)}
    return 200, {"views": views, "days": days, "db": "ok", "latest": latest.isoformat() + "Z" if latest else None}


# --- seeding ----------------------------------------------------------------------------


def seed(conf: dict, mb: float) -> int:
    """Fill page_views with about ``mb`` MB of rows in all, then rebuild the daily aggregates; return bytes added.

    Sizes count the rows' data (path, referrer, user agent, timestamp, id). Idempotent-ish:
    what was seeded is recorded (``meta.seeded_bytes``); seeding again to the same size
    adds nothing, to a larger size only the difference.
    """
    ensure_schema(conf)
    conn = connect(conf)
    target = int(mb * 1024 * 1024)
    with conn.cursor() as cur:
        cur.execute("SELECT v FROM meta WHERE k = 'seeded_bytes'")
        row = cur.fetchone()
    done = int(row[0]) if row else 0
    if done >= target:
        log.info("already seeded %.1f MB (asked %.1f MB): nothing to do", done / 1048576, mb)
        return 0
    rng = random.Random(done or 2)
    start = datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(days=90)
    added = 0
    step = max(1, (target - done) // 10)
    next_report = step
    while done + added < target:
        rows = []
        while len(rows) < 5000 and done + added < target:
            path = rng.choice(PATHS)
            ref = rng.choice(REFERRERS)
            agent = rng.choice(AGENTS)
            rows.append((path, ref, agent, start + timedelta(seconds=rng.random() * 90 * 86400)))
            added += len(path) + len(ref) + len(agent) + 16
        conn.begin()
        with conn.cursor() as cur:
            # pymysql turns this into multi-row INSERTs
            cur.executemany("INSERT INTO page_views (path, referrer, user_agent, ts) VALUES (%s, %s, %s, %s)", rows)
            cur.execute(
                "INSERT INTO meta (k, v) VALUES ('seeded_bytes', %s) ON DUPLICATE KEY UPDATE v = VALUES(v)",
                (str(done + added),),
            )
        conn.commit()
        if added >= next_report:
            log.info("seeded %.1f of %.1f MB", (done + added) / 1048576, mb)
            next_report += step
    log.info("rebuilding the daily aggregates")
    conn.begin()
    with conn.cursor() as cur:
        cur.execute("DELETE FROM daily")
        cur.execute("INSERT INTO daily (day, path, views) SELECT DATE(ts), path, COUNT(*) FROM page_views GROUP BY DATE(ts), path")
    conn.commit()
    conn.close()
    log.info("seeding done: %.1f MB of page views added", added / 1048576)
    return added


# --- the web app ------------------------------------------------------------------------


class Handler(BaseHTTPRequestHandler):
    server_version = "stats/1"
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

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        url = urlparse(self.path)
        if url.path == "/health":
            self.send_json(*health(self.conf))
            return
        try:
            conn = connect(self.conf)
        except pymysql.MySQLError as exc:
            self.send_json(503, {"db": "error", "error": str(exc)})
            return
        try:
            if url.path == "/hit":
                path = parse_qs(url.query).get("path", ["/"])[0]
                record_view(conn, path, self.headers.get("Referer", ""), self.headers.get("User-Agent", ""))
                self.send(204, b"", "text/plain")
            elif url.path == "/daily.json":
                with conn.cursor() as cur:
                    cur.execute("SELECT day, SUM(views) FROM daily GROUP BY day ORDER BY day DESC LIMIT 90")
                    self.send_json(200, [{"day": d.isoformat(), "views": int(v)} for d, v in cur.fetchall()])
            elif url.path == "/":
                with conn.cursor() as cur:
                    cur.execute(
                        "SELECT path, views FROM daily WHERE day = UTC_DATE() ORDER BY views DESC LIMIT 20"
                    )
                    rows = cur.fetchall()
                items = "".join(f"<tr><td>{html.escape(p)}</td><td>{v}</td></tr>" for p, v in rows)
                page = f"<!doctype html><title>Stats</title><h1>Today</h1><table>{items}</table>"
                self.send(200, page.encode(), "text/html; charset=utf-8")
            else:
                self.send_json(404, {"error": "not found"})
        finally:
            conn.close()


def writer(conf: dict, interval: float, stop: threading.Event) -> None:
    """Record a synthetic page view every ``interval`` seconds until ``stop`` is set (errors logged)."""
    rng = random.Random()
    conn = None
    while not stop.wait(interval):
        try:
            conn = conn or connect(conf)
            record_view(conn, rng.choice(PATHS), rng.choice(REFERRERS), rng.choice(AGENTS))
        except pymysql.MySQLError as exc:
            log.warning("background page view not written: %s", exc)
            conn = None


def wait_for_schema(conf: dict, stop: threading.Event) -> None:
    """Create the tables once MariaDB answers (it may start after this app); retry every 2 s."""
    while not stop.is_set():
        try:
            ensure_schema(conf)
            return
        except pymysql.MySQLError as exc:
            log.warning("database not ready (%s); retrying", exc)
            stop.wait(2)


def serve(conf: dict, host: str, port: int) -> None:
    Handler.conf = conf
    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    stop = threading.Event()
    wait_for_schema(conf, stop)
    if conf["write_interval"] > 0:
        threading.Thread(target=writer, args=(conf, conf["write_interval"], stop), daemon=True).start()

    def on_term(signum: int, frame: object) -> None:
        stop.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_term)
    log.info("stats on %s:%d, database %s", host, port, conf["db_name"])
    try:
        server.serve_forever()
    finally:
        server.server_close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stats")
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
        seed(conf, args.mb)
        return 0
    serve(conf, getattr(args, "host", None) or conf["host"], getattr(args, "port", None) or int(conf["port"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
