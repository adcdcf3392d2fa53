"""Whether long prompts stall the other requests: stream gaps while long prompts arrive.

    .venv/bin/python loadtests/long_prompts.py [--chars 100000] [--rounds 2] [--seconds 8]
        [--root CHECKOUT]

The setup is `bench_overhead.py`'s (real `redis-server`, the bench policy, audit log, metrics,
OTLP traces to a sink), over a mock upstream with a 20 ms gap between chunks that reports a
context of 131072 tokens, so that a long prompt is tokenized rather than refused at once. Four
streams (a tenant without output rules, so nothing is held back) run for `--seconds`, alone and
then beside a client that sends a chat of `--chars` characters (`max_tokens` 4, the tenant with
the input rules), waits 50 ms and sends the next. The same two phases run straight against the
mock (direct), interleaved with the gateway's, for `--rounds` rounds. Whatever holds the
gateway's interpreter while a long prompt goes through (tokenizing, scanning, parsing) shows up as
stretched gaps in the streams. Prints one markdown table: the gaps' p50, p99 and longest, and the
long prompts' own latency, medians over the rounds. `--root` runs the gateway from another
checkout (A/B). Not part of `make bench`; about 1.5 minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_overhead as bo  # a sibling script, not a package module

WORDS = ("the", "order", "contract", "policy", "refund", "delivery", "customer", "invoice")
CONTEXT = 131_072
STREAMS = 4


def long_text(chars: int) -> str:
    rng = random.Random(7)
    return " ".join(rng.choice(WORDS) for _ in range(chars // 5))[:chars]


async def send_long(t: bo.Target, text: str, stop: float, took_ms: list[float]) -> None:
    body = orjson.dumps(
        {"model": t.model, "max_tokens": 4, "messages": [{"role": "user", "content": text}]}
    )
    async with bo.session(1) as s:
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            async with s.post(t.url, data=body, headers=t.headers) as r:
                data = await r.read()
                if r.status != 200:
                    raise SystemExit(f"a long prompt got {r.status}: {data[:300]!r}")
            took_ms.append((time.perf_counter() - t0) * 1000)
            await asyncio.sleep(0.05)


async def phase(streams: bo.Target, long: bo.Target | None, text: str, seconds: float):
    took: list[float] = []
    jobs = [bo.stream_loop(streams, STREAMS, seconds)]
    if long is not None:
        jobs.append(send_long(long, text, time.perf_counter() + seconds, took))
    run, *_ = await asyncio.gather(*jobs)
    if run.errors or not run.gaps_ms:
        raise SystemExit(f"streams failed: {run.errors} errors, {len(run.gaps_ms)} gaps")
    return run.gaps_ms, took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chars", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--root", default=None, help="run the gateway from this checkout (A/B)")
    args = ap.parse_args()
    text = long_text(args.chars)
    load = os.getloadavg()[0]
    results: dict[tuple[str, bool], list[tuple[float, float, float, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="tg-long-") as tdir:
        tmp = Path(tdir)
        bo.write_policies(tmp)
        procs = bo.Processes(tmp)
        try:
            mock = bo.start_mock(procs, "mock", gap_ms=20, context=CONTEXT)
            sink = bo.start_mock(procs, "otlp-sink")
            redis_url, _ = bo.start_redis(procs)
            context = {"TUNEGATE_ENGINE__MAX_MODEL_LEN": str(CONTEXT)}
            if args.root:  # `python -m gateway` from there runs that checkout's gateway
                bo.ROOT = Path(args.root).resolve()
            url, gw = bo.start_gateway(procs, tmp, "gw", mock, redis_url, sink, context)
            procs.wait_http(gw, f"{url}/readyz", 180)
            plain = bo.Target(f"{url}/v1/chat/completions", bo.PLAIN_KEY, "support")
            ruled = bo.Target(f"{url}/v1/chat/completions", bo.KEY, "support")
            direct = bo.Target(f"{mock}/v1/chat/completions", bo.UPSTREAM_KEY, bo.adapter_on(mock))
            problem = asyncio.run(bo._warm([plain, ruled, direct]))
            if problem:
                raise SystemExit(f"warm-up failed: {problem}")
            for r in range(args.rounds):
                for who, streams, long in (("gateway", plain, ruled), ("direct", direct, direct)):
                    for with_long in (False, True):
                        gaps, took = asyncio.run(
                            phase(streams, long if with_long else None, text, args.seconds)
                        )
                        row = (
                            bo.pct(gaps, 50),
                            bo.pct(gaps, 99),
                            max(gaps),
                            statistics.median(took) if took else float("nan"),
                        )
                        results.setdefault((who, with_long), []).append(row)
                        bo.log(
                            f"round {r + 1} {who} long prompts {'on ' if with_long else 'off'}: "
                            f"gap p50 {row[0]:.1f} p99 {row[1]:.1f} max {row[2]:.1f} ms; "
                            f"{len(took)} long prompts, p50 {row[3]:.1f} ms"
                        )
        finally:
            procs.stop_all()
    print(bo.machine_line(sys.argv[1:], load, "loadtests/long_prompts.py"))
    print()
    print(
        f"{STREAMS} streams (upstream gap 20 ms), alone and beside one client sending "
        f"{args.chars}-character chats; medians of {args.rounds} interleaved round(s).\n"
    )
    print("| to | long prompts | gap p50 ms | gap p99 ms | longest gap ms | one long, p50 ms |")
    print("|---|---|---|---|---|---|")
    for (who, with_long), rows in results.items():
        p50, p99, top, took = (statistics.median(col) for col in zip(*rows, strict=True))
        took_s = f"{took:.1f}" if with_long else ""
        on = "yes" if with_long else "no"
        print(f"| {who} | {on} | {p50:.1f} | {p99:.1f} | {top:.1f} | {took_s} |")


if __name__ == "__main__":
    main()
