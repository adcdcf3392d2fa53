"""What each part of the full pipeline costs in CPU per request: one gateway per variant, each with
one part switched off, measured in interleaved rounds, the measured process alone on a core.

    .venv/bin/python loadtests/stage_costs.py [--rounds 5] [--requests 3000] [--conc 8]

The setup is `bench_overhead.py`'s (mock upstream at 0 ms, real `redis-server`, the bench
tenant's policy, audit log, metrics, OTLP traces to a sink). Variants: the full pipeline; without
tracing (`OTEL_TRACES_EXPORTER=none`); with the in-memory store instead of Redis; with the audit
log on tmpfs (`/dev/shm`, where `fsync` costs next to nothing); the same full gateway for a tenant
without output rules; all four of those at once; and `bare_relay.py`. Each round measures every
variant once, in turn; the saving is the full pipeline's figure minus the variant's in the same
round, then the median over rounds. With two cores or more, everything runs on the first one this
process may use and the process being measured on the last, so the client, the mock and Redis do
not share its core (the figures are lower than `bench_overhead.py`'s, where they do). Prints one
markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_overhead as bo  # a sibling script, not a package module

NO_TRACING = {"OTEL_TRACES_EXPORTER": "none"}


@dataclass
class Variant:
    name: str  # what is switched off
    gateway: str  # which gateway process answers it ("bare": the bare relay)
    key: str = bo.KEY


def variants() -> list[Variant]:
    return [
        Variant("nothing (full pipeline)", "full"),
        Variant("tracing", "no-tracing"),
        Variant("Redis (in-memory store)", "memory"),
        Variant("audit fsync (audit log on tmpfs)", "tmpfs-audit"),
        Variant("output safety rules (a tenant without them)", "full", bo.PLAIN_KEY),
        Variant("all four", "all-off", bo.PLAIN_KEY),
        Variant("everything (bare relay)", "bare"),
    ]


def table(names: list[str], rounds: list[dict[str, float]]) -> str:
    """Markdown: each variant's median CPU per request, and its saving against the full
    pipeline (the first name) taken within each round, then the median of those."""
    full = names[0]
    base = statistics.median(r[full] for r in rounds)
    lines = [
        f"Median of {len(rounds)} interleaved round(s); saving = full pipeline minus the variant "
        "in the same round.",
        "",
        "| switched off | CPU µs per request | saving µs | share of the full pipeline |",
        "|---|---|---|---|",
    ]
    for name in names:
        cpu = statistics.median(r[name] for r in rounds)
        if name == full:
            lines.append(f"| {name} | {cpu:.0f} | | |")
            continue
        saving = statistics.median(r[full] - r[name] for r in rounds)
        lines.append(f"| {name} | {cpu:.0f} | {saving:.0f} | {saving / base:.0%} |")
    return "\n".join(lines)


def pin(pid: int, cpus: set[int]) -> None:
    """Every thread of `pid` and of its descendants onto `cpus` (best effort)."""
    for proc in bo.tree_pids(pid):
        try:
            tasks = [int(t.name) for t in Path(f"/proc/{proc}/task").iterdir()]
        except OSError:
            continue
        for tid in tasks:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(tid, cpus)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--conc", type=int, default=8)
    args = ap.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    two = len(cpus) >= 2
    first, second = {cpus[0]}, {cpus[-1]}
    machine = bo.machine_line(sys.argv[1:], os.getloadavg()[0], "loadtests/stage_costs.py")
    with tempfile.TemporaryDirectory(prefix="tg-stages-") as tmp_name:
        tmp = Path(tmp_name)
        bo.write_policies(tmp)
        shm = Path(tempfile.mkdtemp(prefix="tg-stages-audit-", dir="/dev/shm"))
        procs = bo.Processes(tmp)
        try:
            if two:
                os.sched_setaffinity(0, first)  # the client, and everything started from here
            mock = bo.start_mock(procs, "mock0")
            sink = bo.start_mock(procs, "otlp-sink")
            redis_url, _ = bo.start_redis(procs)
            setups = {
                "full": (redis_url, {}),
                "no-tracing": (redis_url, NO_TRACING),
                "memory": (None, {}),
                "tmpfs-audit": (redis_url, {"TUNEGATE_AUDIT_DIR": str(shm / "a")}),
                "all-off": (None, {**NO_TRACING, "TUNEGATE_AUDIT_DIR": str(shm / "b")}),
            }
            started = {
                name: bo.start_gateway(procs, tmp, name, mock, redis, sink, extra)
                for name, (redis, extra) in setups.items()
            }
            for url, proc in started.values():
                procs.wait_http(proc, f"{url}/readyz", 180)
            started["bare"] = bo.start_bare_relay(procs, mock)
            urls = {name: url for name, (url, _) in started.items()}
            pids = {name: proc.pid for name, (_, proc) in started.items()}
            chosen = variants()

            def target(v: Variant) -> bo.Target:
                model = bo.adapter_on(mock) if v.gateway == "bare" else "support"
                return bo.Target(f"{urls[v.gateway]}/v1/chat/completions", v.key, model)

            targets: dict[str, bo.Target] = {}
            for v in sorted(chosen, key=lambda v: v.gateway == "bare"):  # the bare relay last:
                targets[v.name] = target(v)  # it asks for the tune the gateways loaded
                problem = asyncio.run(bo._warm([targets[v.name]]))
                if problem:
                    raise SystemExit(f"warm-up failed ({v.name}): {problem}")
            rounds: list[dict[str, float]] = []
            for r in range(args.rounds):
                figures: dict[str, float] = {}
                for v in chosen:
                    pid = pids[v.gateway]
                    if two:
                        pin(pid, second)
                    res = asyncio.run(
                        bo.cpu_per_request(targets[v.name], pid, args.requests, args.conc, {})
                    )
                    if two:
                        pin(pid, first)
                    if res["errors"]:
                        raise SystemExit(f"{v.name}: {res['errors']:.0f} errors")
                    figures[v.name] = res["us"]
                    bo.log(f"round {r + 1}: {v.name}: {res['us']:.0f} µs per request")
                rounds.append(figures)
                time.sleep(0.5)
        finally:
            procs.stop_all()
            shutil.rmtree(shm, ignore_errors=True)
    print(machine)
    print()
    where = "the measured process alone on a core of its own" if two else "one core for all"
    print(f"{args.requests} requests at {args.conc} connections per figure; {where}.")
    print()
    print(table([v.name for v in chosen], rounds))


if __name__ == "__main__":
    main()
