"""pyctr metrics: the daemon's Prometheus endpoint as tables a person reads.

The endpoint is ``--address`` (``host:port``), else the one the daemon reports on its debug
socket (``/debug/vars``).  ``--raw`` prints the exposition text unchanged.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from ...client.ops import DebugClient, fetch_metrics
from ..common import human_size, table
from .pprof import add_debug_socket_flag, debug_socket


def register(sub: Any) -> None:
    p = sub.add_parser("metrics", help="the daemon's metrics endpoint, readable")
    p.add_argument("--address", default="", help="metrics host:port (default: what the daemon reports)")
    add_debug_socket_flag(p)
    p.add_argument("--raw", action="store_true", help="print the Prometheus text as served")
    p.set_defaults(func=run, no_client=True)


def parse(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """sample name -> [(labels, value)]."""
    out: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[s.name].append((dict(s.labels), float(s.value)))
    return out


def _one(m: dict[str, list[tuple[dict[str, str], float]]], name: str) -> float | None:
    vals = m.get(name)
    return vals[0][1] if vals else None


def render(text: str) -> str:
    import io

    m = parse(text)
    buf = io.StringIO()
    # containers (cgroup v2 or v1 names)
    per: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    for col, names in (("mem", ("container_memory_usage_bytes", "container_memory_usage_usage_bytes")),
                       ("limit", ("container_memory_usage_limit_bytes",)),
                       ("cpu", ("container_cpu_usage_seconds", "container_cpu_total_seconds")),
                       ("pids", ("container_pids_current",))):
        for name in names:
            for labels, v in m.get(name, []):
                per[(labels.get("namespace", ""), labels.get("container_id", ""))][col] = v
    buf.write(f"CONTAINERS ({len(per)})\n")
    if per:
        rows = []
        for (ns, cid), vals in sorted(per.items()):
            limit = vals.get("limit", 0)
            rows.append([ns, cid, human_size(vals["mem"]) if "mem" in vals else "-",
                         human_size(limit) if limit else "unlimited",
                         f"{vals['cpu']:.2f}s" if "cpu" in vals else "-", int(vals.get("pids", 0))])
        table(["NAMESPACE", "CONTAINER", "MEMORY", "LIMIT", "CPU", "PIDS"], rows, out=buf)
    buf.write("\nENGINE\n")
    shim_rss = sum(v for _, v in m.get("pycontainerd_shim_memory_rss_bytes", []))
    removed = {lab.get("kind", ""): v for lab, v in m.get("pycontainerd_gc_removed_total", [])}
    rows = [
        ["shims", f"{int(_one(m, 'pycontainerd_shims') or 0)} ({human_size(shim_rss)} resident)"],
        ["daemon memory", human_size(_one(m, "process_resident_memory_bytes") or 0)],
        ["daemon CPU", f"{_one(m, 'process_cpu_seconds_total') or 0:.2f}s"],
        ["open fds", str(int(_one(m, "process_open_fds") or 0))],
        ["event-loop lag", f"{(_one(m, 'pycontainerd_event_loop_lag_seconds') or 0) * 1000:.1f} ms"],
        ["gc runs", f"{int(_one(m, 'pycontainerd_gc_runs_total') or 0)} "
                    f"({(_one(m, 'pycontainerd_gc_pause_seconds_sum') or 0):.3f}s total, "
                    f"{human_size(_one(m, 'pycontainerd_gc_freed_bytes_total') or 0)} freed; removed "
                    + (", ".join(f"{int(v)} {k}" for k, v in sorted(removed.items())) or "nothing") + ")"],
        ["content ingested", f"{human_size(_one(m, 'pycontainerd_content_ingested_bytes_total') or 0)} in "
                             f"{int(_one(m, 'pycontainerd_content_ingest_seconds_count') or 0)} blobs"],
        ["layers applied", f"{human_size(_one(m, 'pycontainerd_diff_applied_bytes_total') or 0)} in "
                           f"{int(_one(m, 'pycontainerd_diff_apply_seconds_count') or 0)} layers, "
                           f"{_one(m, 'pycontainerd_diff_apply_seconds_sum') or 0:.2f}s"],
    ]
    table(["WHAT", "VALUE"], rows, out=buf)
    calls: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for labels, v in m.get("grpc_server_handled_total", []):
        method = f"{labels.get('grpc_service', '').rsplit('.', 1)[-1]}/{labels.get('grpc_method', '')}"
        calls[method][labels.get("grpc_code", "")] += v
    buf.write(f"\nGRPC ({len(calls)} methods called)\n")
    if calls:
        rows = []
        for method, codes in sorted(calls.items(), key=lambda kv: -sum(kv[1].values())):
            errors = {c: int(n) for c, n in codes.items() if c != "OK" and n}
            rows.append([method, int(sum(codes.values())),
                         ", ".join(f"{c}={n}" for c, n in sorted(errors.items())) or "-"])
        table(["METHOD", "CALLS", "ERRORS"], rows, out=buf)
    return buf.getvalue()


async def run(args: argparse.Namespace, client: Any) -> int:
    address = args.address
    if not address:
        address = str((await DebugClient(debug_socket(args)).vars()).get("metrics_address", ""))
        if not address:
            print("pyctr: the daemon serves no metrics: set [metrics] address in its config")
            return 1
    text = await fetch_metrics(address)
    print(text if args.raw else render(text), end="")
    return 0
