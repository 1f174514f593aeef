"""One relaunch run in a process of its own, so its peak memory is its own: ``python -m bench.child SPEC_JSON``.

SPEC: ``{"mode": "data"|"rebuild"|"drill", "site", "root", "api", "token", "dns_port", "key", "old", "new",
"golden"}`` (``golden``: the drill's and the rebuild's option, ``off``/``make``/``use``; default ``use``).
Prints one JSON line last: ``{"phases": {...}, "peak_mb": ..., "record": {...}}`` (record for
rebuild and drill: their report record). Logs go to stderr.
"""

from __future__ import annotations

import json
import logging
import resource
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    spec = json.loads(argv[0])
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    from relaunch.cloud import Cloud
    from relaunch.rebuild import Where
    from relaunch.state import load_hosts

    out: dict = {}
    with Cloud(token=spec["token"], endpoint=spec["api"], timeout=30, poll_interval=0.5, poll_max_interval=2.0) as cloud:
        where = Where(cloud, spec.get("dns_port"), Path(spec["key"]))
        if spec["mode"] == "data":
            from relaunch.rebuild import data_restore_verify

            hosts = load_hosts(spec["site"])
            out["phases"] = data_restore_verify(spec["site"], hosts[spec["old"]], hosts[spec["new"]],
                                                root=spec["root"], where=where)
        elif spec["mode"] == "rebuild":
            from relaunch.rebuild import RebuildOptions, rebuild

            result = rebuild(spec["site"], RebuildOptions(settle=0, golden=spec.get("golden", "use")), root=spec["root"], where=where)
            out.update(status=result.status, error=result.error, record=result.record)
        elif spec["mode"] == "drill":
            from relaunch.drill import DrillOptions, drill

            result = drill(spec["site"], DrillOptions(golden=spec.get("golden", "use")), root=spec["root"], where=where)
            out.update(status=result.status, error=result.error, record=result.record)
        else:
            raise SystemExit(f"unknown mode {spec['mode']!r}")
    # ru_maxrss is in KiB on Linux: this process's own peak resident set
    out["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
