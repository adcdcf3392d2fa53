"""Where the gateway's time goes: CPU per request and latency at 1 connection, what the event
loop's thread and the other threads used of a core, optionally a py-spy profile, for the same
full-pipeline setup as `bench_overhead.py` (mock upstream at 0 ms, real Redis, safety, audit,
metrics, OTLP traces to a sink).

    .venv/bin/python loadtests/profile_gateway.py [--requests 2000] [--conc 8]
        [--py-spy OUT.txt] [--env NAME=VALUE ...] [--memory-store]
        [--open-rate R [--open-s S] [--warm N]]

`--env` passes settings to the gateway (e.g. `OTEL_TRACES_EXPORTER=none` to see what tracing
costs); `--py-spy` writes py-spy's collapsed stacks (needs `py-spy` on PATH or in the venv).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_overhead as bo  # a sibling script, not a package module


def user_sys(pid: int) -> tuple[float, float]:
    fields = bo.stat_fields(Path(f"/proc/{pid}/stat"))
    return int(fields[11]) / bo.TICK, int(fields[12]) / bo.TICK


def thread_ticks(pid: int) -> dict[int, int]:
    """Each thread's CPU ticks (user and system), by thread id."""
    ticks = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = bo.stat_fields(task / "stat")
        except OSError:  # a thread that ended meanwhile
            continue
        ticks[int(task.name)] = int(fields[11]) + int(fields[12])
    return ticks


def thread_use(pid: int, before: dict[int, int], seconds: float) -> tuple[float, float]:
    """What the event loop's thread and the others (the span exporter, the audit commits) used
    of a core since `before`. Together they cannot pass one core for long: the threads take
    turns with the interpreter lock. A thread that ended meanwhile is not counted (the
    gateway's threads live as long as it does)."""
    after = thread_ticks(pid)
    used = {tid: (n - before.get(tid, 0)) / bo.TICK / seconds for tid, n in after.items()}
    loop = used.pop(pid, 0.0)  # the main thread's id is the process id
    return loop, sum(used.values())


def thread_shares(pid: int, before: dict[int, int], seconds: float) -> str:
    loop, others = thread_use(pid, before, seconds)
    return f"event loop's thread {loop:.0%} of a core, other threads {others:.0%}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--conc", type=int, default=8)
    ap.add_argument("--py-spy", default=None, help="write collapsed stacks here")
    ap.add_argument("--cprofile", default=None, help="run the gateway under cProfile, stats here")
    ap.add_argument("--root", default=None, help="run the gateway from this checkout (A/B)")
    ap.add_argument("--env", action="append", default=[], help="NAME=VALUE for the gateway")
    ap.add_argument(
        "--open-rate", type=float, default=0.0, help="instead: an open loop at this req/s"
    )
    ap.add_argument("--open-s", type=float, default=10.0, help="the open loop's seconds")
    ap.add_argument(
        "--warm", type=int, default=0, help="the open loop opens this many connections first"
    )
    ap.add_argument("--memory-store", action="store_true", help="no Redis: the in-memory store")
    ap.add_argument("--keep-log", default=None, help="copy the gateway's log here at the end")
    args = ap.parse_args()
    extra = dict(kv.split("=", 1) for kv in args.env)
    if args.root:  # `python -m gateway` from there imports that checkout's gateway package
        bo.ROOT = Path(args.root).resolve()

    with tempfile.TemporaryDirectory(prefix="tg-prof-") as tmp_name:
        tmp = Path(tmp_name)
        bo.write_policies(tmp)
        procs = bo.Processes(tmp)
        try:
            mock = bo.start_mock(procs, "mock0")
            sink = bo.start_mock(procs, "otlp-sink")
            redis_url, _ = bo.start_redis(procs)
            if args.cprofile:  # the gateway's command, under cProfile (stats written at exit)
                start = procs.start

                def under_cprofile(name, cmd, env=None):  # type: ignore[no-untyped-def]
                    if name == "gw":
                        cmd = [cmd[0], "-m", "cProfile", "-o", args.cprofile, *cmd[1:]]
                    return start(name, cmd, env)

                procs.start = under_cprofile  # type: ignore[method-assign]
            store = None if args.memory_store else redis_url
            url, gw = bo.start_gateway(procs, tmp, "gw", mock, store, sink, extra)
            procs.wait_http(gw, f"{url}/readyz", 180)
            t = bo.Target(f"{url}/v1/chat/completions", bo.KEY, "support")
            problem = asyncio.run(bo._warm([t]))
            if problem:
                raise SystemExit(f"warm-up failed: {problem}")
            spy = None
            if args.py_spy:
                exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
                spy = subprocess.Popen(
                    [
                        exe,
                        "record",
                        "-p",
                        str(gw.pid),
                        "-f",
                        "raw",
                        "-o",
                        args.py_spy,
                        "-r",
                        "400",
                        "--nonblocking",
                        "--gil",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            ticks, began = thread_ticks(gw.pid), time.monotonic()
            if args.open_rate:  # overload: goodput, refusals and where the time goes then
                run = asyncio.run(bo.open_loop(t, args.open_rate, args.open_s, args.warm))
                shares = thread_shares(gw.pid, ticks, time.monotonic() - began)
                if spy is not None:
                    spy.send_signal(2)
                    spy.wait(timeout=30)
                print(
                    f"open loop {args.open_rate:.0f} req/s offered, {run.sent_rps:.0f} sent: "
                    f"goodput {run.goodput:.0f} req/s, ok p50 {bo.pct(run.ok_ms, 50):.0f} ms "
                    f"p99 {bo.pct(run.ok_ms, 99):.0f} ms; refused "
                    f"{len(run.rejected_ms) / run.seconds:.0f}/s, p50 "
                    f"{bo.pct(run.rejected_ms, 50):.0f} ms p99 {bo.pct(run.rejected_ms, 99):.0f} "
                    f"ms; failed {run.failed}; statuses {run.statuses}; {shares}"
                )
                gw.send_signal(signal.SIGINT)
                gw.wait(timeout=60)
                return
            u0, s0 = user_sys(gw.pid)
            cpu = asyncio.run(bo.cpu_per_request(t, gw.pid, args.requests, args.conc, {}))
            u1, s1 = user_sys(gw.pid)
            shares = thread_shares(gw.pid, ticks, time.monotonic() - began)
            n = args.requests + args.conc * 4
            one = asyncio.run(bo.closed_loop(t, 1, 5.0))
            if spy is not None:
                spy.send_signal(2)
                spy.wait(timeout=30)
            gw.send_signal(signal.SIGINT)  # first, while its span sink answers: a clean exit
            gw.wait(timeout=60)
            if cpu["errors"]:  # refusals cost CPU too: per request answered misleads then
                print(f"CPU {cpu['us_sent']:.0f} us per request sent, refusals included")
            print(
                f"CPU {cpu['us']:.0f} us/request at {args.conc} conn "
                f"(user {(u1 - u0) / n * 1e6:.0f}, system {(s1 - s0) / n * 1e6:.0f}; "
                f"errors {cpu['errors']:.0f}; p50 {cpu['p50']:.1f} ms, p99 {cpu['p99']:.1f} ms; "
                f"{shares}); "
                f"1 conn: p50 {one.p50:.2f} ms, "
                f"p99 {one.p99:.2f} ms, {one.rps:.0f} req/s, errors {one.errors}"
            )
        finally:
            procs.stop_all()
            if args.keep_log:
                shutil.copy(tmp / "gw.log", args.keep_log)
            if args.cprofile and not Path(args.cprofile).exists():
                print((tmp / "gw.log").read_text(errors="replace")[-2000:])


if __name__ == "__main__":
    main()
