"""``bench/run``: relaunch's recovery time against a by-hand baseline and the machine's floor (see the README).

Brings the example site up in a sandbox of its own (its own Docker network, removed at the
end, also on failure and Ctrl-C), on a production host and a spare "new" host, and for
each data size measures in alternation over several rounds: by hand, floor, relaunch's
data + restore (+ verify); then a scheduled backup against a plain script and the bytes
the off-host store adds after a fixed workload; and, at the default size, the end-to-end
``fab drill`` and ``fab rebuild``, each from the base image and from a golden snapshot that a
``fab drill --golden`` makes in between (``report.E2E_RUNS``). Prints the tables and the
closing line; writes
``bench/results/<date>.json`` and ``.svg``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from bench import report

ROOT = Path(__file__).resolve().parents[1]
SITE = "example"
TOKEN = "bench-token"
SPARE = "example-bench-new"
DEFAULT_SIZES = (100, 500, 2000)
DEFAULT_SIZE = 100

log = logging.getLogger("bench")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/run", description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default=str(DEFAULT_SIZE),
                   help=f"data sizes in MB, comma-separated (default {DEFAULT_SIZE}; the issue's set: "
                        f"{','.join(map(str, DEFAULT_SIZES))})")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds per size (default 3)")
    p.add_argument("--backup-rounds", type=int, default=2, help="scheduled-vs-plain backup rounds per size (default 2; 0: skip)")
    p.add_argument("--no-e2e", action="store_true", help="skip the end-to-end fab drill and fab rebuild")
    p.add_argument("--out", default=str(ROOT / "bench" / "results"), help="where the JSON and the plot go")
    p.add_argument("--keep-logs", action="store_true", help="keep the work directory (relaunch logs) after the run")
    args = p.parse_args(argv)
    args.sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    if not args.sizes or min(args.sizes) <= 0:
        p.error("--sizes: positive MB values")
    if not 1 <= args.rounds <= 20 or not 0 <= args.backup_rounds <= 10:
        p.error("--rounds 1..20, --backup-rounds 0..10")
    return args


def machine() -> dict[str, Any]:
    """What the numbers were taken on, and how busy it was (other work shares these cores)."""
    info: dict[str, Any] = {"cpus": os.cpu_count(), "load_before": os.getloadavg()}
    try:
        info["cpu"] = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
        info["mem_gb"] = round(int(next(l.split()[1] for l in open("/proc/meminfo") if l.startswith("MemTotal"))) / 2**20, 1)
        info["containers_running"] = len(subprocess.run(["docker", "ps", "-q"], capture_output=True, text=True).stdout.split())
    except (OSError, StopIteration):
        pass
    return info


class Bench:
    """One benchmark run: its sandbox, its hosts, its numbers."""

    def __init__(self, args: argparse.Namespace, base: Path) -> None:
        self.args, self.base = args, base
        self.site_root = base / "site"
        self.logs = base / "logs"
        self.logs.mkdir()
        self.results: dict[str, Any] = {"started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                        "machine": machine(), "args": {k: v for k, v in vars(args).items()},
                                        "sizes": {}, "golden_image": "end to end only: a drill and a rebuild from the base image, "
                                        "`fab drill --golden` (makes the snapshot), then a drill and a rebuild from it; "
                                        "the data-path rounds use already bootstrapped hosts"}
        self.loads: list[float] = []

    # --- the sandbox ---------------------------------------------------------------------------------------

    def start(self) -> None:
        from relaunch.cloud import Cloud
        from relaunch.remote import ensure_client_key
        from relaunch.sandbox.api import start_server
        from relaunch.sandbox.docker_backend import DockerBackend
        from relaunch.sandbox.site import Target

        (self.site_root / "inventory").mkdir(parents=True)
        data = yaml.safe_load((ROOT / "inventory/example.yml").read_text())
        (self.site_root / "inventory/example.yml").write_text(yaml.safe_dump(data, sort_keys=False))
        self.key = self.base / "keys" / "id_ed25519"
        self.key.parent.mkdir()
        ensure_client_key(self.key)
        self.backend = DockerBackend(network=f"relaunch-sandbox-b{os.getpid()}")
        self.backend.prepare()
        self.api = start_server(self.base / "cloud", self.backend, TOKEN, per_hour=1_000_000, per_minute=1_000_000)
        self.cloud = Cloud(token=TOKEN, endpoint=self.api.url, timeout=30, poll_interval=0.5, poll_max_interval=2.0)
        self.target = Target(cloud=self.cloud, network=self.backend.network, key_path=self.key)

    def stop(self) -> None:
        from relaunch.sandbox.docker_backend import remove_everything

        for what in ("api",):
            handle = getattr(self, what, None)
            if handle is not None:
                try:
                    handle.close()
                except Exception as exc:  # noqa: BLE001 - clean-up goes on
                    log.warning("closing the sandbox API: %s", exc)
        if getattr(self, "backend", None) is not None:
            remove_everything(network=self.backend.network)

    # --- hosts ---------------------------------------------------------------------------------------------

    def hosts(self, size: int) -> tuple[Any, Any, float]:
        """Production seeded to ``size`` MB (backups installed) and the spare new host; return both records and the setup time."""
        from relaunch.sandbox.site import bring_up
        from relaunch.state import load_hosts, production_record
        from relaunch.inventory import load_site

        started = time.monotonic()
        bring_up(SITE, data_mb=size, root=self.site_root, target=self.target, backups=True)
        if SPARE not in load_hosts(SITE):
            bring_up(SITE, data_mb=0, root=self.site_root, target=self.target, droplet=SPARE)
        inv = load_site(SITE, self.site_root)
        old = production_record(SITE, inv.production.droplet_name)
        return old, load_hosts(SITE)[SPARE], time.monotonic() - started

    def child(self, mode: str, old: str = "", new: str = "", golden: str = "use") -> dict[str, Any]:
        spec = {"mode": mode, "site": SITE, "root": str(self.site_root), "api": self.api.url, "token": TOKEN,
                "dns_port": self.api.dns_port, "key": str(self.key), "old": old, "new": new, "golden": golden}
        log_file = self.logs / f"{mode}-{golden}-{int(time.time())}.log"
        with open(log_file, "w") as err:
            proc = subprocess.run([sys.executable, "-m", "bench.child", json.dumps(spec)], cwd=ROOT,
                                  stdout=subprocess.PIPE, stderr=err, text=True, timeout=6 * 3600)
        lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
        if proc.returncode != 0 or not lines:
            raise RuntimeError(f"relaunch {mode} failed (exit {proc.returncode}); its log: {log_file}\n"
                             + log_file.read_text()[-3000:])
        out = json.loads(lines[-1])
        out["log"] = str(log_file)
        return out

    # --- one size ------------------------------------------------------------------------------------------

    def size(self, mb: int) -> dict[str, Any]:
        from relaunch import apps, transfer
        from relaunch.inventory import load_site
        from relaunch.provision import open_host
        from bench import variants

        log.info("== %d MB: bringing the hosts up", mb)
        old_rec, new_rec, setup = self.hosts(mb)
        inv = load_site(SITE, self.site_root)
        trees = [p for app in inv.apps for p in app.files]
        old, new = open_host(old_rec, self.key), open_host(new_rec, self.key)
        out: dict[str, Any] = {"setup_s": round(setup, 1), "old": old_rec.name, "new": new_rec.name, "rounds": []}
        try:
            variants.quiesce(old, inv, backup_timer=True)
            variants.quiesce(new, inv, backup_timer=True)
            compose_old, compose_new = apps.compose_command(old), apps.compose_command(new)
            reset = variants.reset_script(inv, compose_new, trees)
            order = list(report.VARIANTS)
            for i in range(self.args.rounds):
                rnd: dict[str, Any] = {"load": os.getloadavg()[0], "steps": {}}
                for variant in order:
                    variants.run_script(new, reset, "resetting the new host")
                    log.info("%d MB round %d: %s", mb, i + 1, variant)
                    try:
                        self.variant(variant, rnd, old, new, old_rec, new_rec, inv, compose_old, compose_new, trees)
                    except Exception as exc:  # noqa: BLE001 - one failed variant leaves the round's others standing
                        log.error("%d MB round %d: %s failed: %s", mb, i + 1, variant, exc)
                        rnd.setdefault("errors", {})[variant] = str(exc)[-2000:]
                    log.info("  -> %s", rnd.get(variant))
                order = order[1:] + order[:1]  # the next round starts with the next variant
                out["rounds"].append(rnd)
            out.update(report.summarize(out["rounds"]))
            variants.run_script(new, reset, "resetting the new host")
            if self.args.backup_rounds:
                try:
                    out["backups"] = self.backups(mb, old, inv, trees, compose_old)
                except Exception as exc:  # noqa: BLE001 - the data-path numbers stand; say what failed
                    log.error("backups at %d MB failed: %s", mb, exc)
                    out["backups"] = {"error": str(exc)[-2000:]}
        finally:
            old.close()
            new.close()
        return out

    def variant(self, variant: str, rnd: dict[str, Any], old: Any, new: Any, old_rec: Any, new_rec: Any, inv: Any,
                compose_old: list[str], compose_new: list[str], trees: list[str]) -> None:
        """Time one variant on the (reset) new host; put its numbers into the round."""
        from relaunch import transfer
        from bench import variants

        if variant == "relaunch":
            res = self.child("data", old_rec.name, new_rec.name)
            rnd["relaunch"] = {k: round(v, 3) for k, v in res["phases"].items()}
            rnd["relaunch_peak_mb"] = round(res["peak_mb"], 1)
            return
        with transfer.link(old, old_rec.host_key, new, src_address=old_rec.ipv4) as ln:
            make = variants.by_hand if variant == "by_hand" else variants.floor
            timed = variants.run_script(new, make(ln, inv, compose_old, compose_new, trees), variant)
        rnd[variant] = round(timed.seconds, 3)
        rnd["steps"][variant] = timed.steps

    def backups(self, mb: int, old: Any, inv: Any, trees: list[str], compose: list[str]) -> dict[str, Any]:
        from relaunch.backup.sandbox_store import backup_host_record
        from relaunch.backup.install import parse_sftp
        from relaunch.provision import open_host
        from bench import variants

        config = json.loads(old.run("cat /etc/relaunch/backup.json", hide=True, in_stream=False).stdout)
        plain = variants.plain_backup_script(inv, compose, trees, config)
        rounds = []
        for i in range(self.args.backup_rounds):
            rnd: dict[str, Any] = {"load": os.getloadavg()[0]}
            for which in (("scheduled", "plain") if i % 2 == 0 else ("plain", "scheduled")):
                log.info("%d MB backup round %d: %s", mb, i + 1, which)
                if which == "scheduled":
                    got = variants.scheduled_backup(old, SITE, config.get("root"))
                    rnd.update(scheduled=round(got["seconds"], 3), runner_peak_mb=round(got["runner_peak_mb"], 1),
                               tree_peak_mb=round(got["tree_peak_mb"], 1), breakdown=got["breakdown"])
                else:
                    timed = variants.run_script(old, plain, "the plain backup script")
                    rnd.update(plain=round(timed.seconds, 3), plain_steps=timed.steps)
                log.info("  -> %s", rnd.get(which))
            rounds.append(rnd)
        out = report.summarize_backups(rounds)
        out["rounds_detail"] = rounds
        # The bytes the store adds for a run after a fixed workload (same rows and files for a given size).
        record = backup_host_record(inv)
        repo = parse_sftp(inv.backups.offsite.repository)
        store = open_host(record, self.key)
        try:
            du = lambda: int(store.run(f"du -sb {repo.path}", hide=True, in_stream=False).stdout.split()[0])  # noqa: E731
            variants.scheduled_backup(old, SITE)  # whatever changed before is in the store now
            before = du()
            variants.run_script(old, variants.workload_script(inv, compose, trees, seed=mb), "the fixed workload")
            got = variants.scheduled_backup(old, SITE)
            added = du() - before
        finally:
            store.close()
        out.update(store_added_mb=round(added / 2**20, 2), after_workload_s=round(got["seconds"], 2),
                   after_workload_breakdown=got["breakdown"],
                   workload="20000 rows in each database, 8 files of 512 KiB")
        return out

    def end_to_end(self) -> dict[str, Any]:
        """The end-to-end runs of ``report.E2E_RUNS`` in order, of the site as it is; phases, RTO, overhead.

        A drill and a rebuild (live, switched) from the base image; ``fab drill --golden``, which
        makes the golden snapshot (its time reported apart, not in its RTO); then a drill and a
        rebuild that start from that snapshot. When no snapshot was made the last two are skipped
        (they would start from the base image under a golden label).
        """
        from relaunch import apps
        from relaunch.inventory import load_site
        from relaunch.provision import open_host
        from relaunch.state import production_record

        # production as it runs: its apps up (the rounds stopped them; a backup records the images of the
        # services that run, and the drill restores from the backup it takes now)
        inv = load_site(SITE, self.site_root)
        conn = open_host(production_record(SITE, inv.production.droplet_name), self.key)
        try:
            apps.start_apps(conn, inv)
            apps.enable_backup_timer(conn, True)
        finally:
            conn.close()
        out: dict[str, Any] = {}
        for key, (mode, golden, label) in report.E2E_RUNS.items():
            if golden == "use" and not (out.get("drill_golden_make") or {}).get("golden_made"):
                out[key] = report.e2e_failed(mode, golden, "no golden snapshot: fab drill --golden made none",
                                             status="skipped")
                log.info("end to end: %s skipped (no golden snapshot)", label)
                continue
            log.info("end to end: %s", label)
            try:
                out[key] = report.e2e_entry(mode, golden, self.child(mode, golden=golden))
            except Exception as exc:  # noqa: BLE001 - the other numbers stand; say what failed
                log.error("end to end %s failed: %s", label, exc)
                out[key] = report.e2e_failed(mode, golden, str(exc)[-2000:])
            log.info("  -> %s", out[key])
            if mode == "rebuild":
                self.destroy_retired()
        return out

    def destroy_retired(self) -> None:
        """A rebuild retired the old production host: destroy it (one Droplet less on a busy machine)."""
        from relaunch.state import load_hosts

        for name, host in load_hosts(SITE).items():
            if host.role == "retired":
                try:
                    if any(d.id == host.droplet_id for d in self.cloud.list_droplets()):
                        self.cloud.destroy_droplet(host.droplet_id)
                except Exception as exc:  # noqa: BLE001 - only to spare the machine
                    log.warning("destroying the retired host %s: %s", name, exc)

    def run(self) -> int:
        self.start()
        default = DEFAULT_SIZE if DEFAULT_SIZE in self.args.sizes else self.args.sizes[0]
        for mb in self.args.sizes:
            self.results["sizes"][str(mb)] = self.size(mb)
            if mb == default and not self.args.no_e2e:
                self.results["end_to_end"] = self.end_to_end()
            self.save()  # after every size: a long run that dies keeps what it measured
        self.results["machine"]["load_after"] = os.getloadavg()
        sizes = {int(k): v for k, v in self.results["sizes"].items()}
        self.results["linearity"] = {k: report.linearity([(x, s.get(f"{k}_s")) for x, s in sizes.items()])
                                     for k in report.SERIES}
        js, svg = self.save()
        e2e = self.results.get("end_to_end") or {}
        rebuild = e2e.get("rebuild") or {}
        drill = e2e.get("drill") or {}
        peak = max([v for v in [sizes[default].get("peak_mb"), *(r.get("peak_mb") for r in e2e.values())]
                    if v is not None] or [0]) or None
        print(report.table(sizes))
        print()
        for mb, s in sorted(sizes.items()):
            for rnd in (s.get("backups") or {}).get("rounds_detail") or []:
                if rnd.get("breakdown"):
                    print(f"{mb} MB backup round: " + report.backup_line(rnd["breakdown"], rnd.get("plain_steps")))
            print(f"{mb} MB: relaunch/by-hand={report._num(s.get('relaunch_by_hand'), 2)} "
                  f"relaunch/floor={report._num(s.get('relaunch_floor'), 2)} "
                  f"with verify/by-hand={report._num(s.get('verified_by_hand'), 2)} "
                  f"(per-round medians {report._num(s.get('per_round_by_hand'), 2)} / {report._num(s.get('per_round_floor'), 2)}); "
                  f"loads {[round(r['load'], 1) for r in s['rounds']]}")
        if e2e:
            print()
            print(report.e2e_table(e2e))
            print()
            for line in report.e2e_lines(e2e):
                print(line)
            golden = report.golden_line(e2e)
            if golden:
                print(golden)
        lin = self.results["linearity"].get("relaunch")
        if lin:
            print(f"relaunch time vs size: {lin['slope_s_per_mb'] * 1000:.1f} s/GB + {lin['intercept_s']:.1f} s, r²={lin['r2']:.3f}")
        print(f"machine: {self.results['machine']}")
        print(f"results: {js}\nplot: {svg}")
        summary = dict(sizes[default])
        summary["peak_mb"] = peak
        if e2e:
            rto_from = "fab rebuild (base image)" if rebuild.get("rto_s") is not None else "fab drill (base image)"
            gold = e2e.get("rebuild_golden") or {}
            print(f"closing line: overhead_s and rto_s are those of {rto_from}; fab rebuild from the golden "
                  f"snapshot: {gold.get('status') or 'not run'}"
                  + (f", rto_s={report._num(gold.get('rto_s'))}" if gold.get("status") == "passed" else ""))
        print(report.final_line(summary, (rebuild if rebuild.get("rto_s") is not None else drill).get("overhead_s"),
                                rebuild.get("rto_s") or drill.get("rto_s")))
        return 0

    def save(self) -> tuple[Path, Path]:
        stamp = self.results["started_at"].replace(":", "").replace("+0000", "Z")
        return report.write_results(Path(self.args.out), stamp, self.results)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    for noisy in ("paramiko", "urllib3", "invoke", "fabric", "docker"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    base = Path(tempfile.mkdtemp(prefix="relaunch-bench-"))
    # the benchmark's own state: never the user's ~/.ssh, relaunch state or sandbox
    os.environ.update(HOME=str(base / "home"), RELAUNCH_SANDBOX_DIR=str(base / "sandbox-state"),
                      RELAUNCH_STATE_DIR=str(base / "relaunch-state"))
    for name in ("SSH_AUTH_SOCK", "DIGITALOCEAN_ACCESS_TOKEN", "DIGITALOCEAN_END_POINT"):
        os.environ.pop(name, None)
    (base / "home").mkdir()
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    bench = Bench(args, base)
    try:
        return bench.run()
    finally:
        log.info("removing the benchmark's sandbox")
        bench.stop()
        if args.keep_logs:
            log.info("work directory kept: %s", base)
        else:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
