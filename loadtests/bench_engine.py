"""Gateway (in-process vLLM, full pipeline) against vLLM's own OpenAI server, same demo model.

Starts both servers on loopback, runs the same closed-loop load through each in interleaved
rounds (each run once the servers are idle again), and prints one markdown table: requests per
second, p50/p99 latency and time to first token, with the gateway/direct ratio. Bounded in time;
loopback only.

    .venv/bin/python loadtests/bench_engine.py [--rounds 3] [--seconds 3] [--concurrency 1,8]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_overhead import has_content, tree_cpu_s  # a sibling script, not a package module

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build" / "demo"
KEY = "tg-bench-key-loopback"
PROMPTS = [
    "My order has not arrived yet. What should I do?",
    "Can I cancel my contract early?",
    "How can I contact you?",
    "I was charged twice for my order.",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited ({proc.returncode})")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{url} not ready")


def start_gateway(
    tmp: Path, pool_url: str | None = None, upstream_key: str | None = None, wait: bool = True
) -> tuple[str, subprocess.Popen[bytes]]:
    """The gateway with its in-process engine, or (`pool_url`) in pool mode over a server."""
    from gateway.auth import hash_key

    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "policies").mkdir()
    (tmp / "policies" / "tenants.yaml").write_text(
        "default:\n  limits: {requests_per_minute: 100000, tokens_per_minute: 100000000}\n"
        f"tenants:\n  - name: bench\n    keys: [{{id: b1, sha256: {hash_key(KEY)}}}]\n"
        "    tunes: [support, legal, extract]\n    default_tune: support\n"
    )
    port = free_port()
    env = {
        **os.environ,
        "TUNEGATE_PORT": str(port),
        "TUNEGATE_POLICIES_DIR": str(tmp / "policies"),
        "TUNEGATE_AUDIT_DIR": str(tmp / "audit"),
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "TUNEGATE_LOG_LEVEL": "warning",
    }
    if pool_url is not None:
        env["TUNEGATE_ENGINE__KIND"] = "pool"
        env["TUNEGATE_ENGINE__POOL_URLS"] = f'["{pool_url}"]'
        env["TUNEGATE_ENGINE__UPSTREAM_API_KEY"] = upstream_key or ""
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    if wait:
        wait_ready(f"{url}/readyz", proc)
    return url, proc


UPSTREAM_KEY = "tg-bench-upstream-loopback"


def engine_names() -> dict[str, str]:
    """Each tune's adapter name on an engine (`name@version`), as the gateway loads it."""
    from gateway.catalogue import TuneCatalogue

    return {t.name: t.key for t in TuneCatalogue.load(ROOT / "tunes", "tunegate-demo-base")}


def start_vllm(wait: bool = True) -> tuple[str, subprocess.Popen[bytes]]:
    """vLLM's own server with the tunes loaded under the names the gateway gives them: the pool
    gateway finds them there (from `/v1/models`) and routes to them, so the server holds one
    copy of each whichever path a request comes by, as a server behind the gateway does (under
    the tunes' bare names it held six adapters for its four slots, `--max-loras`)."""
    port = free_port()
    names = engine_names()
    lora = [f"{names[n]}={BUILD / 'adapters' / n}" for n in ("support", "legal", "extract")]
    cmd = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(BUILD / "base"),
        "--served-model-name",
        "tunegate-demo-base",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--dtype",
        "float32",
        "--max-model-len",
        "512",
        "--enable-lora",
        "--max-loras",
        "4",
        "--max-cpu-loras",
        "8",
        "--max-lora-rank",
        "16",
        "--enforce-eager",
        # stats stay on, as on a production server (its /metrics) and as in the gateway, which
        # reads the engine's scheduler stats for its own metrics
        "--lora-modules",
        *lora,
    ]
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env={
            **os.environ,
            "VLLM_CPU_KVCACHE_SPACE": "1",
            "VLLM_API_KEY": UPSTREAM_KEY,  # the pool-mode gateway loads tunes at run time
            "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    if wait:
        wait_ready(f"{url}/health", proc)
    return url, proc


SCHEMAS: dict[str, dict[str, object]] = {}  # a tune's JSON schema, where its format has one


def tune_schemas() -> dict[str, dict[str, object]]:
    """The gateway enforces a tune's JSON schema with the engine's structured outputs; each
    request names it as its `response_format`, so vLLM's own server does the same work."""
    from gateway.catalogue import TuneCatalogue

    catalogue = TuneCatalogue.load(ROOT / "tunes", "tunegate-demo-base")
    return {
        tune.name: tune.format.json_schema
        for tune in catalogue
        if tune.format is not None and tune.format.json_schema is not None
    }


async def one(client: httpx.AsyncClient, url: str, model: str, i: int) -> tuple[float, float]:
    body: dict[str, object] = {
        "model": model,
        "temperature": 0,
        "max_tokens": 48,
        "stream": True,
        "messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
    }
    if model in SCHEMAS:
        schema = {"name": model, "schema": SCHEMAS[model]}
        body["response_format"] = {"type": "json_schema", "json_schema": schema}
    start = time.perf_counter()
    ttft = None
    key = KEY
    if url in DIRECT:  # vLLM's own server: its key, and the tune by its name there
        key, body["model"] = UPSTREAM_KEY, ENGINE_NAMES.get(model, model)
    async with client.stream(
        "POST", f"{url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
    ) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if ttft is None and line.startswith("data: {") and has_content(line[6:]):
                ttft = time.perf_counter() - start
    total = time.perf_counter() - start
    return total, ttft if ttft is not None else total


async def run_load(
    url: str, models: list[str], seconds: float, concurrency: int
) -> dict[str, float]:
    """A closed loop: `concurrency` clients, each sending its next request when the last one
    ends, for `seconds`. Requests per second is concurrency / mean latency (Little's law for a
    closed loop), so the run's edges (clients starting together, the last answers draining at
    lower concurrency) do not weigh on it as they do on completed / wall time."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        results: list[tuple[float, float]] = []
        stop = time.perf_counter() + seconds

        async def worker(w: int) -> None:
            i = w
            while time.perf_counter() < stop:
                results.append(await one(client, url, models[i % len(models)], i))
                i += concurrency

        await asyncio.gather(*(worker(w) for w in range(concurrency)))
    lat = sorted(r[0] for r in results)
    return {
        "rps": concurrency / statistics.fmean(lat),
        "p50": statistics.median(lat) * 1000,
        "p99": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000,
        "ttft": statistics.median(r[1] for r in results) * 1000,
        "n": float(len(lat)),
    }


def settle(roots: set[int], most_s: float = 4.0) -> None:
    """Wait until the servers are idle: vLLM's CPU engine busy-waits for a while after its last
    step, and the next run must not share the cores with the one before."""
    deadline = time.monotonic() + most_s
    last = tree_cpu_s(*roots)
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = tree_cpu_s(*roots)
        if now - last < 0.05:  # under a fifth of a core over the last quarter second
            return
        last = now


# (label, connections, gateway, vLLM's server, pool mode: medians over rounds; `side`'s figures)
Row = tuple[str, int, dict[str, float], dict[str, float], dict[str, float], dict[str, float]]


def side(figures: dict[str, list[dict[str, float]]]) -> dict[str, float]:
    """Each comparison taken side by side: the median over rounds of the round's own ratio (or
    difference) against vLLM's server, whose run in that round came next to it in time. The
    machine's speed drifts between rounds (a server's rounds differ by 10-40%), and a ratio of
    medians would set one round's server against another round's."""
    vl = figures["vl"]

    def over(name: str, fig: str, diff: bool = False) -> float:
        pairs = zip(figures[name], vl, strict=True)
        return statistics.median(a[fig] - b[fig] if diff else a[fig] / b[fig] for a, b in pairs)

    return {
        "gw": over("gw", "rps"),
        "gw_ttft": over("gw", "ttft", diff=True),
        "pool": over("pool", "rps"),
        "pool_p50": over("pool", "p50", diff=True),
        "pool_ttft": over("pool", "ttft", diff=True),
    }


DIRECT: set[str] = set()  # URLs of vLLM's own server (its key, not a tenant key)
ENGINE_NAMES: dict[str, str] = {}  # tune name -> its adapter's name on vLLM's own server


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=3.0, help="one run's closed loop")
    ap.add_argument("--concurrency", default="1,8")
    ap.add_argument(
        "--rows",
        action="store_true",
        help="print rows for bench_overhead.py's table (figure | gateway | direct | LiteLLM | "
        "ratio) instead of this script's own table",
    )
    args = ap.parse_args()
    SCHEMAS.update(tune_schemas())
    ENGINE_NAMES.update(engine_names())
    with tempfile.TemporaryDirectory() as tmp:
        started: list[subprocess.Popen[bytes]] = []
        try:
            # The in-process gateway and vLLM's server start side by side (each loads a model).
            gw_url, gw = start_gateway(Path(tmp) / "inprocess", wait=False)
            started.append(gw)
            vl_url, vl = start_vllm(wait=False)
            started.append(vl)
            wait_ready(f"{vl_url}/health", vl)
            wait_ready(f"{gw_url}/readyz", gw)
            DIRECT.add(vl_url)
            pool_url, pool = start_gateway(Path(tmp) / "pool", vl_url, UPSTREAM_KEY, wait=False)
            started.append(pool)
            wait_ready(f"{pool_url}/readyz", pool)
            roots = {gw.pid, vl.pid, pool.pid}
            # Off the clock: each server's first batches of each size (the CPU kernels are made
            # for a shape on first use) and every tune.
            for url in (gw_url, vl_url, pool_url):
                settle(roots)
                asyncio.run(run_load(url, ["support", "legal", "extract"], 1.5, 8))
            rows: list[Row] = []
            for label, models in (
                ("single tune", ["support"]),
                ("mix of tunes", ["support", "legal", "extract"]),
            ):
                for conc in (int(c) for c in args.concurrency.split(",")):
                    figures: dict[str, list[dict[str, float]]] = {"gw": [], "vl": [], "pool": []}
                    for _ in range(args.rounds):  # interleaved rounds, medians reported
                        for name, url in (("gw", gw_url), ("vl", vl_url), ("pool", pool_url)):
                            settle(roots)
                            figures[name].append(
                                asyncio.run(run_load(url, models, args.seconds, conc))
                            )
                            got = figures[name][-1]
                            print(
                                f"{label}, {conc} conn, {name}: {got['rps']:.2f} req/s, "
                                f"p50 {got['p50']:.0f} ms, TTFT {got['ttft']:.0f} ms, "
                                f"{got['n']:.0f} requests",
                                file=sys.stderr,
                            )
                    med = {
                        k: {m: statistics.median(f[m] for f in v) for m in v[0]}
                        for k, v in figures.items()
                    }
                    rows.append((label, conc, med["gw"], med["vl"], med["pool"], side(figures)))
        finally:
            for proc in started:
                os.killpg(proc.pid, 15)
                proc.wait(timeout=60)
    if args.rows:
        print_rows(rows)
        return
    print(
        "In-process: the gateway with its own vLLM engine against vLLM's OpenAI server. "
        "Pool: the gateway in pool mode in front of that same server (the hop's cost)."
    )
    print(
        "| load | conc | in-process req/s | vLLM req/s | ratio | in-process p50 ms | vLLM p50 ms "
        "| in-process p99 ms | vLLM p99 ms | in-process TTFT ms | vLLM TTFT ms "
        "| pool req/s | pool/vLLM | pool added p50 ms | pool added TTFT ms |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for label, conc, g, v, p, r in rows:
        print(
            f"| {label} | {conc} | {g['rps']:.1f} | {v['rps']:.1f} | {r['gw']:.2f} "
            f"| {g['p50']:.0f} | {v['p50']:.0f} | {g['p99']:.0f} | {v['p99']:.0f} "
            f"| {g['ttft']:.0f} | {v['ttft']:.0f} | {p['rps']:.1f} | {r['pool']:.2f} "
            f"| {r['pool_p50']:.1f} | {r['pool_ttft']:.1f} |"
        )


def print_rows(rows: list[Row]) -> None:
    """The real-engine figures as rows of the overhead table: the gateway's column holds the
    in-process engine (or pool mode), the direct column vLLM's own server (medians over the
    rounds); the ratios and differences are taken round by round (`side`)."""
    for label, conc, g, v, p, r in rows:
        where = f"demo model, {label}, {conc} conn (direct: vLLM's own server)"
        print(
            f"| in-process engine req/s, {where} | {g['rps']:.1f} | {v['rps']:.1f} |  "
            f"| {r['gw']:.2f} gw/vLLM |"
        )
        print(
            f"| in-process engine TTFT ms p50, {where} | {g['ttft']:.0f} | {v['ttft']:.0f} |  "
            f"| {r['gw_ttft']:+.0f} ms |"
        )
        print(
            f"| pool mode req/s, {where} | {p['rps']:.1f} | {v['rps']:.1f} |  "
            f"| {r['pool']:.2f} pool/vLLM; added p50 {r['pool_p50']:+.1f} ms, "
            f"TTFT {r['pool_ttft']:+.1f} ms |"
        )
    ratios = [r["gw"] for *_, r in rows]
    # three decimals: a row at 0.996x reads "1.00x" with two, beside a MISS
    print(
        f"TARGET in-process engine req/s >= 1.0x vLLM's own server | {min(ratios):.3f}x to "
        f"{max(ratios):.3f}x | {'PASS' if min(ratios) >= 1.0 else 'MISS'}"
    )


if __name__ == "__main__":
    main()
