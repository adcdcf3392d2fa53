"""Soak: mixed load on the real engine for M minutes, with periodic tune switches.

Starts a `redis-server` (unless `--no-redis`) and one gateway (`python -m gateway serve`, the
in-process vLLM engine on the demo build in `build/demo`, full pipeline: keys, policy, rate
limits and concurrency slots in Redis, input and output safety rules, the audit log), both on free
loopback ports. Then, for `--minutes` (fractions allowed):

- a few closed-loop asyncio clients for two tenants (`alpha`, `beta`): chat and completions,
  streamed or not, on the demo tunes (support, legal, extract) or `default`, now and then
  `GET /v1/models`;
- one paced client for the `metered` tenant, whose `requests_per_minute` is low, so its 429s are
  intended (counted apart; any other 429 is a failure);
- every `--switch-every` seconds `PUT /admin/tenants/alpha/tune` binds the next tune, and a
  request for `default` right after must come back with that tune as its `model` (and its audit
  record must name it).

The RSS of the gateway's process tree (the gateway and the vLLM engine processes) is sampled
every 5 s; growth is the end sample over the sample at the end of the warm-up (10% of the run, at
least 30 s or half the run). At the end the gateway gets SIGTERM while two streams are running
(graceful drain: both must end with `[DONE]`, the gateway and its engine processes must exit),
the audit folder is checked with `tunegate audit verify`, and its records are matched to the
requests one for one (each request carries its own `x-request-id`). A markdown table of the
figures and each criterion goes to stdout, progress to stderr; the exit code is 0 only if every
criterion holds.

    .venv/bin/python loadtests/soak.py --minutes 10          # `make soak`
    .venv/bin/python loadtests/soak.py --minutes 0.5 --no-redis --switch-every 10
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from background import alive, run_in_background

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build" / "demo"
TUNES = ("support", "legal", "extract")
READY_TIMEOUT_S = 300
STOP_TIMEOUT_S = 60
DRAIN_STREAMS = 2
SAMPLE_EVERY_S = 5.0
CLIENT_TIMEOUT_S = 120
MAX_GROWTH = 0.10

PROMPTS = [
    "My order has not arrived yet. What should I do?",
    "Can I cancel my contract early?",
    "How can I contact you?",
    "I was charged twice for my order.",
    "What is the capital of France?",
    "Extract the order number from: order 4471 arrived damaged.",
    "Please summarise our refund policy in one sentence.",
    "Is my data shared with third parties?",
]

POLICY = """default:
  limits:
    requests_per_minute: 100000
    tokens_per_minute: 100000000
    max_concurrent: 16
    max_tokens: 128
  safety:
    input:
      - {{id: secrets-in, kind: api_key, action: block}}
      - {{id: injection, kind: prompt_injection, action: flag}}
    output:
      - {{id: email-out, kind: email, action: redact}}
      - {{id: phone-out, kind: phone, action: redact}}
      - {{id: no-paris, kind: deny_terms, terms: [Paris], action: block}}
tenants:
  - name: alpha
    keys: [{{id: alpha-1, sha256: {alpha}}}]
    tunes: [support, legal, extract]
    default_tune: support
    audit_content: hash
  - name: beta
    keys: [{{id: beta-1, sha256: {beta}}}]
    tunes: [support, legal, extract]
    default_tune: legal
    audit_content: redact
  - name: metered
    keys: [{{id: metered-1, sha256: {metered}}}]
    tunes: [support]
    default_tune: support
    limits: {{requests_per_minute: {rpm}}}
"""


def log(msg: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- processes -------------------------------------------------------------------------------


def start_redis(work: Path) -> tuple[str, subprocess.Popen[bytes]]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (`make test` installs it; or --no-redis)")
    port = free_port()
    cmd = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    cmd += ["--appendonly", "no", "--dir", str(work)]
    with (work / "redis.log").open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return f"redis://127.0.0.1:{port}/0", proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("redis-server did not start")


def write_setup(work: Path, keys: dict[str, str], rpm: int) -> tuple[Path, Path]:
    """The repository's catalogue (absolute adapter paths) and a policy with the soak tenants."""
    from gateway.auth import hash_key

    tunes = work / "tunes"
    for manifest in sorted((ROOT / "tunes").glob("*/tune.yaml")):
        target = tunes / manifest.parent.name
        target.mkdir(parents=True, exist_ok=True)
        text = manifest.read_text().replace(
            "adapter_path: ../../build/demo", f"adapter_path: {BUILD}"
        )
        (target / "tune.yaml").write_text(text)
    policies = work / "policies"
    policies.mkdir(parents=True, exist_ok=True)
    hashes = {name: hash_key(key) for name, key in keys.items()}
    (policies / "tenants.yaml").write_text(POLICY.format(rpm=rpm, **hashes))
    return tunes, policies


def start_gateway(
    work: Path, tunes: Path, policies: Path, admin: str, redis_url: str | None
) -> tuple[str, subprocess.Popen[bytes], Path]:
    port = free_port()
    env = {
        **os.environ,
        "TUNEGATE_PORT": str(port),
        "TUNEGATE_TUNES_DIR": str(tunes),
        "TUNEGATE_POLICIES_DIR": str(policies),
        "TUNEGATE_ADMIN_TOKEN": admin,
        "TUNEGATE_ENGINE__MODEL_PATH": str(BUILD / "base"),
        "TUNEGATE_AUDIT_DIR": str(work / "audit"),
        "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),
    }
    if redis_url:
        env["TUNEGATE_REDIS_URL"] = redis_url
        env["TUNEGATE_REDIS_PREFIX"] = "soak:"
    else:
        env.pop("TUNEGATE_REDIS_URL", None)
    log_path = work / "gateway.log"
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    run_in_background(proc.pid)  # redis-server and the clients come first on the CPU
    return f"http://127.0.0.1:{port}", proc, log_path


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


async def wait_ready(url: str, proc: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    async with aiohttp.ClientSession() as session:
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"gateway exited with {proc.returncode}:\n{log_tail(log_path)}")
            if b"Application startup failed" in log_path.read_bytes():  # it may not exit
                raise SystemExit(f"gateway startup failed:\n{log_tail(log_path)}")
            try:
                async with session.get(f"{url}/readyz", timeout=aiohttp.ClientTimeout(2)) as r:
                    if r.status == 200:
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise SystemExit(
                    f"gateway not ready after {READY_TIMEOUT_S}s:\n{log_tail(log_path)}"
                )
            await asyncio.sleep(0.5)


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants (psutil, else /proc)."""
    try:
        import psutil
    except ImportError:
        return _proc_tree_rss(pid)
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total


def _proc_tree_rss(pid: int) -> int:
    children: dict[int, list[int]] = collections.defaultdict(list)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                children[int(fields[1])].append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    total, todo, page = 0, [pid], os.sysconf("SC_PAGE_SIZE")
    while todo:
        p = todo.pop()
        todo.extend(children.get(p, []))
        try:
            total += int((Path(f"/proc/{p}/statm")).read_text().split()[1]) * page
        except (OSError, IndexError, ValueError):
            continue
    return total


# -- load ------------------------------------------------------------------------------------


@dataclass
class Stats:
    sent: list[str] = field(default_factory=list)  # request ids of every /v1 request sent
    answered: set[str] = field(default_factory=set)  # ... that got an HTTP status back
    ok: int = 0
    intended_429: int = 0
    failures: list[str] = field(default_factory=list)
    by_kind: collections.Counter[str] = field(default_factory=collections.Counter)
    latencies: list[float] = field(default_factory=list)
    switches: list[tuple[str, str, str, bool]] = field(default_factory=list)  # tune, id, model, ok
    metrics: dict[str, str] = field(default_factory=dict)  # from /metrics at the end of the load
    load_at_start: float = 0.0  # the machine's 1-minute load average when the load began
    seq: int = 0

    def next_id(self, tag: str) -> str:
        self.seq += 1
        rid = f"soak-{tag}-{self.seq}"
        self.sent.append(rid)
        return rid

    def fail(self, what: str) -> None:
        self.failures.append(what)
        if len(self.failures) <= 10:
            log(f"FAILED {what}")


def _body(route: str, model: str, stream: bool, rng: random.Random) -> dict[str, Any]:
    prompt = rng.choice(PROMPTS)
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": rng.choice((8, 16, 24, 32)),
        "temperature": rng.choice((0, 0.7)),
        "stream": stream,
    }
    if route == "chat":
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    if stream and rng.random() < 0.5:
        body["stream_options"] = {"include_usage": True}
    return body


async def send(
    session: aiohttp.ClientSession,
    url: str,
    key: str,
    stats: Stats,
    tenant: str,
    route: str,
    body: dict[str, Any] | None,
    tag: str,
    on_headers: Callable[[], None] | None = None,
) -> tuple[int, str | None, str]:
    """One /v1 request; returns (status, the answer's `model`, request id). Failures counted."""
    rid = stats.next_id(tag)
    headers = {"Authorization": f"Bearer {key}", "x-request-id": rid}
    path = {"chat": "/v1/chat/completions", "completions": "/v1/completions"}.get(route)
    stream = bool(body and body.get("stream"))
    kind = f"{route}{' stream' if stream else ''}"
    started = time.perf_counter()
    what = f"{tenant} {kind} {body.get('model') if body else ''} ({rid})"
    try:
        if path is None:
            request = session.get(f"{url}/v1/models", headers=headers)
        else:
            request = session.post(f"{url}{path}", headers=headers, data=orjson.dumps(body))
        async with request as r:
            stats.answered.add(rid)
            if on_headers is not None:
                on_headers()
            raw = await r.read()
            status = r.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        stats.fail(f"{what}: {type(exc).__name__}: {exc}")
        return 0, None, rid
    stats.by_kind[kind] += 1
    if status == 429:
        if tenant == "metered":
            stats.intended_429 += 1
        else:
            stats.fail(f"{what}: unintended 429 {raw[:200]!r}")
        return status, None, rid
    if status != 200:
        stats.fail(f"{what}: HTTP {status} {raw[:300]!r}")
        return status, None, rid
    model = None
    try:
        if stream:
            events = [
                line[5:].strip() for line in raw.decode().splitlines() if line.startswith("data:")
            ]
            if not events or events[-1] != "[DONE]":
                stats.fail(f"{what}: stream did not end with [DONE]: {raw[-200:]!r}")
                return status, None, rid
            for event in events[:-1]:
                payload = orjson.loads(event)
                if "error" in payload:
                    stats.fail(f"{what}: error event in the stream: {event[:300]}")
                    return status, None, rid
                model = payload.get("model", model)
        else:
            payload = orjson.loads(raw)
            if path is not None and not payload.get("choices"):
                stats.fail(f"{what}: no choices: {raw[:300]!r}")
                return status, None, rid
            model = payload.get("model")
    except (orjson.JSONDecodeError, UnicodeDecodeError, AttributeError) as exc:
        stats.fail(f"{what}: unreadable answer ({exc}): {raw[:200]!r}")
        return status, None, rid
    stats.ok += 1
    stats.latencies.append(time.perf_counter() - started)
    return status, model, rid


async def client(
    url: str, key: str, tenant: str, stats: Stats, stop_at: float, seed: int, pace_s: float = 0
) -> None:
    rng = random.Random(seed)
    tunes = TUNES if tenant != "metered" else ("support",)
    timeout = aiohttp.ClientTimeout(total=CLIENT_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while time.monotonic() < stop_at:
            if rng.random() < 0.05:
                await send(session, url, key, stats, tenant, "models", None, tenant)
            else:
                route = "chat" if rng.random() < 0.7 else "completions"
                model = "default" if rng.random() < 0.25 else rng.choice(tunes)
                body = _body(route, model, rng.random() < 0.5, rng)
                await send(session, url, key, stats, tenant, route, body, tenant)
            if pace_s:
                await asyncio.sleep(pace_s * rng.uniform(0.8, 1.2))


async def switcher(
    url: str, admin: str, key: str, stats: Stats, stop_at: float, every_s: float
) -> None:
    """Rebind alpha's tune every `every_s`; a `default` request right after must run on it."""
    timeout = aiohttp.ClientTimeout(total=CLIENT_TIMEOUT_S)
    order = ["legal", "extract", "support"]
    async with aiohttp.ClientSession(timeout=timeout) as session:
        i = 0
        while True:
            await asyncio.sleep(every_s)
            if time.monotonic() >= stop_at:
                return
            tune = order[i % len(order)]
            i += 1
            auth = {"Authorization": f"Bearer {admin}", "x-tunegate-actor": "soak"}
            try:
                async with session.put(
                    f"{url}/admin/tenants/alpha/tune", headers=auth, json={"tune": tune}
                ) as r:
                    answer = await r.read()
                    if r.status != 200:
                        stats.fail(f"switch to {tune}: HTTP {r.status} {answer[:200]!r}")
                        continue
            except (aiohttp.ClientError, TimeoutError) as exc:
                stats.fail(f"switch to {tune}: {type(exc).__name__}: {exc}")
                continue
            body = {
                "model": "default",
                "max_tokens": 4,
                "temperature": 0,
                "messages": [{"role": "user", "content": "Hello"}],
            }
            status, model, rid = await send(
                session, url, key, stats, "alpha", "chat", body, "switch"
            )
            ok = status == 200 and model == tune
            stats.switches.append((tune, rid, str(model), ok))
            log(f"alpha bound to {tune}: `default` answered by {model} ({'ok' if ok else 'WRONG'})")


async def sampler(
    pid: int, samples: list[tuple[float, int]], t0: float, stop: asyncio.Event
) -> None:
    while not stop.is_set():
        samples.append((time.monotonic() - t0, tree_rss(pid)))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), SAMPLE_EVERY_S)


async def progress(stats: Stats, t0: float, total_s: float, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), 30)
        except TimeoutError:
            log(
                f"{time.monotonic() - t0:.0f}/{total_s:.0f} s: {len(stats.sent)} requests, "
                f"{stats.ok} ok, {stats.intended_429} intended 429, {len(stats.failures)} failed"
            )


async def prime(url: str, keys: dict[str, str], stats: Stats) -> None:
    """One request per tune and route before the clock starts (adapters loaded, paths warm)."""
    rng = random.Random(0)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=CLIENT_TIMEOUT_S)) as s:
        for tune in TUNES:
            for route, stream in (("chat", False), ("completions", True)):
                body = _body(route, tune, stream, rng)
                await send(s, url, keys["alpha"], stats, "alpha", route, body, "prime")


async def run_load(
    url: str, pid: int, keys: dict[str, str], admin: str, args: argparse.Namespace, stats: Stats
) -> tuple[list[tuple[float, int]], float, float]:
    await prime(url, keys, stats)
    total_s = args.minutes * 60
    stats.load_at_start = os.getloadavg()[0]
    t0 = time.monotonic()
    stop_at = t0 + total_s
    samples: list[tuple[float, int]] = []
    stop = asyncio.Event()
    background = [
        asyncio.create_task(sampler(pid, samples, t0, stop)),
        asyncio.create_task(progress(stats, t0, total_s, stop)),
    ]
    tenants = ["alpha", "beta"]
    tasks = [
        client(url, keys[tenants[i % 2]], tenants[i % 2], stats, stop_at, seed=i)
        for i in range(args.clients)
    ]
    tasks.append(client(url, keys["metered"], "metered", stats, stop_at, seed=99, pace_s=1.0))
    tasks.append(switcher(url, admin, keys["alpha"], stats, stop_at, args.switch_every))
    await asyncio.gather(*tasks)
    elapsed = time.monotonic() - t0
    stop.set()
    await asyncio.gather(*background)
    samples.append((time.monotonic() - t0, tree_rss(pid)))  # the end sample
    stats.metrics = await scrape_metrics(url)
    return samples, elapsed, total_s


# -- the end: stop, verify, count ------------------------------------------------------------


def descendants(pid: int) -> list[int]:
    try:
        import psutil
    except ImportError:
        return []
    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


async def drain(
    url: str, key: str, stats: Stats, proc: subprocess.Popen[bytes], children: list[int]
) -> tuple[bool, str]:
    """SIGTERM to the gateway alone while streams are running: they must finish with `[DONE]`
    (and be audited), then the gateway must exit and take its engine processes along."""
    body = {
        "model": "support",
        "prompt": "Tell me everything about your refund and delivery policies, step by step.",
        "max_tokens": 128,  # long enough to be running when the signal lands
        "temperature": 1.0,
        "stream": True,
    }
    failed_before = len(stats.failures)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=CLIENT_TIMEOUT_S)) as s:
        heard = [asyncio.Event() for _ in range(DRAIN_STREAMS)]
        tasks = [
            asyncio.create_task(
                send(s, url, key, stats, "alpha", "completions", body, "drain", e.set)
            )
            for e in heard
        ]
        for task, event in zip(tasks, heard, strict=True):  # each has its headers, or ended
            waiter = asyncio.create_task(event.wait())
            await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
        in_flight = sum(not t.done() for t in tasks)
        proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        results = await asyncio.gather(*tasks)
    finished = sum(status == 200 for status, _, _ in results)
    clean = len(stats.failures) == failed_before and finished == DRAIN_STREAMS and in_flight > 0
    ok, how = await asyncio.to_thread(wait_stopped, proc, children, started)
    note = (
        f"{in_flight} stream(s) in flight at SIGTERM, {finished}/{DRAIN_STREAMS} ended with [DONE]"
    )
    return ok and clean, f"{note}; {how}"


def wait_stopped(
    proc: subprocess.Popen[bytes], children: list[int], started: float
) -> tuple[bool, str]:
    try:
        code = proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return False, f"still running {STOP_TIMEOUT_S} s after SIGTERM (killed)"
    took = time.monotonic() - started
    deadline = time.monotonic() + 10
    left = [p for p in children if alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = [p for p in left if alive(p)]
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    clean = code in (0, -signal.SIGTERM) and not left
    note = f", {len(left)} child process(es) left running (killed)" if left else ""
    return clean, f"exit {code} after {took:.1f} s{note}"


def read_audit(folder: Path) -> list[dict[str, Any]]:
    records = []
    for file in sorted(folder.glob("audit-*.jsonl")):
        records.extend(orjson.loads(line) for line in file.read_bytes().splitlines() if line)
    return records


def verify_audit(folder: Path) -> tuple[bool, str]:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "audit", "verify", str(folder)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return result.returncode == 0, (result.stdout + result.stderr).strip()


def log_levels(path: Path, offset: int) -> tuple[collections.Counter[str], list[str]]:
    """Warning and error lines in the gateway's log (JSON lines, or text) from `offset` (the
    engine's start-up warnings come before it), and the first errors."""
    levels: collections.Counter[str] = collections.Counter()
    errors: list[str] = []
    with path.open("rb") as fh:
        fh.seek(offset)
        text = fh.read().decode(errors="replace")
    for line in text.splitlines():
        try:
            entry = orjson.loads(line)
            level = str(entry.get("level", "")).upper() if isinstance(entry, dict) else ""
        except orjson.JSONDecodeError:
            words = line.split()
            level = next((w for w in words[:4] if w in ("WARNING", "ERROR", "CRITICAL")), "")
            if line.startswith("Traceback"):
                level = "ERROR"
        if level in ("WARNING", "ERROR", "CRITICAL"):
            levels[level] += 1
            if level != "WARNING" and len(errors) < 5:
                errors.append(line[:300])
    return levels, errors


async def scrape_metrics(url: str) -> dict[str, str]:
    """A few of the gateway's own counters, for the table: store fallbacks, audit events."""
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
            session.get(f"{url}/metrics") as r,
        ):
            text = await r.text()
    except (aiohttp.ClientError, TimeoutError) as exc:
        return {"metrics": f"unreadable ({type(exc).__name__})"}
    sums: collections.Counter[str] = collections.Counter()
    wanted = {
        "tunegate_store_fallbacks_total": ("operation", "decision"),
        "tunegate_audit_events_total": ("event",),
        "tunegate_adapter_loads_total": (),
        "tunegate_adapter_evictions_total": (),
        "tunegate_tune_switches_total": (),
    }
    for line in text.splitlines():
        name, _, rest = line.partition("{")
        if name not in wanted or "}" not in rest:
            continue
        labels_text, _, value = rest.rpartition("}")
        labels = dict(
            part.split("=", 1) for part in labels_text.split(",") if "=" in part
        )  # values are quoted and comma-free here
        key = "/".join(labels.get(k, "").strip('"') for k in wanted[name])
        sums[f"{name}|{key}"] += float(value)

    def show(name: str) -> str:
        items = [(k.split("|", 1)[1], v) for k, v in sorted(sums.items()) if k.startswith(name)]
        return ", ".join(f"{k or 'total'} {v:g}" for k, v in items if v) or "none"

    return {
        "store fallbacks (operation/decision)": show("tunegate_store_fallbacks_total"),
        "audit writer events (committed = batches)": show("tunegate_audit_events_total"),
        "adapter loads / evictions": (
            f"{show('tunegate_adapter_loads_total')} / {show('tunegate_adapter_evictions_total')}"
        ),
    }


def mib(n: float) -> str:
    return f"{n / 2**20:.0f} MiB"


@dataclass
class Ending:
    """What the end of the run found: the stop, the audit folder, Redis, the gateway's log."""

    stopped: tuple[bool, str]
    verified: tuple[bool, str]
    records: list[dict[str, Any]]
    redis_info: str
    log_path: Path
    log_offset: int  # where the log stood when the engine was ready


def report(
    args: argparse.Namespace,
    stats: Stats,
    samples: list[tuple[float, int]],
    elapsed: float,
    warmup_s: float,
    end_: Ending,
) -> bool:
    base = next(((t, rss) for t, rss in samples if t >= warmup_s), samples[-1])
    end = samples[-1]
    after = [rss for t, rss in samples if t >= base[0]]
    growth = end[1] / base[1] - 1 if base[1] else float("inf")
    stopped, verified, records = end_.stopped, end_.verified, end_.records
    ids = collections.Counter(str(r.get("request_id")) for r in records)
    answered = stats.answered
    missing = sorted(answered - set(ids))
    extra = sorted(set(ids) - answered)
    doubled = sorted(i for i, n in ids.items() if n > 1)
    by_id = {str(r.get("request_id")): r for r in records}
    audit_429 = sum(1 for r in records if r.get("status") == 429)
    statuses = collections.Counter(str(r.get("status")) for r in records)
    switch_audit_ok = all(
        by_id.get(rid, {}).get("tune") == tune for tune, rid, _, _ in stats.switches
    )
    switches_ok = bool(stats.switches) and all(ok for *_, ok in stats.switches) and switch_audit_ok
    levels, log_errors = log_levels(end_.log_path, end_.log_offset)
    lat = sorted(stats.latencies)
    p50 = statistics.median(lat) * 1000 if lat else 0.0
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000 if lat else 0.0

    criteria = [
        (
            f"RSS growth of the gateway's process tree < {args.max_growth:.0%}",
            f"{growth:+.1%} ({mib(base[1])} at {base[0]:.0f} s -> {mib(end[1])} at end)",
            growth < args.max_growth,
        ),
        (
            "no failed requests (anything but 200 and the metered tenant's 429)",
            str(len(stats.failures)),
            not stats.failures,
        ),
        (
            "the metered tenant was limited (intended 429s > 0)",
            str(stats.intended_429),
            stats.intended_429 > 0,
        ),
        (
            "every tune switch took effect (`default` answered by the new tune, audit agrees)",
            f"{sum(ok for *_, ok in stats.switches)}/{len(stats.switches)}",
            switches_ok,
        ),
        (
            "graceful drain on SIGTERM (running streams finish, clean exit)",
            stopped[1],
            stopped[0],
        ),
        ("audit chain verifies (`tunegate audit verify`)", verified[1], verified[0]),
        (
            "audit record count equals requests answered (one per request id)",
            f"{len(records)} records / {len(answered)} answered",
            len(records) == len(answered) and not (missing or extra or doubled),
        ),
        (
            "audit 429 records equal the 429s the clients got",
            f"{audit_429} / {stats.intended_429}",
            audit_429 == stats.intended_429,
        ),
    ]
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(stats.by_kind.items()))
    figures = [
        (
            "run",
            f"{elapsed / 60:.2f} min of load ({args.minutes:g} asked), warm-up {warmup_s:.0f} s",
        ),
        ("clients", f"{args.clients} closed-loop (alpha, beta) + 1 paced metered"),
        ("redis", end_.redis_info),
        ("requests sent / answered", f"{len(stats.sent)} / {len(answered)}"),
        ("by kind", kinds),
        (
            "200 / intended 429 / failed",
            f"{stats.ok} / {stats.intended_429} / {len(stats.failures)}",
        ),
        ("throughput", f"{len(answered) / max(elapsed, 1e-9):.2f} req/s"),
        ("latency of 200s p50 / p99", f"{p50:.0f} / {p99:.0f} ms"),
        ("tune switches", ", ".join(t for t, *_ in stats.switches) or "none"),
        (
            "RSS after warm-up / end / peak after warm-up",
            f"{mib(base[1])} / {mib(end[1])} / {mib(max(after))}",
        ),
        ("audit records by status", ", ".join(f"{k}: {n}" for k, n in sorted(statuses.items()))),
        (
            "gateway log warnings / errors once ready",
            f"{levels['WARNING']} / {levels['ERROR'] + levels['CRITICAL']}",
        ),
        *stats.metrics.items(),
    ]
    ok = all(passed for *_, passed in criteria)
    print(f"\n## Soak: {'PASS' if ok else 'FAIL'}\n")
    machine = platform.processor() or platform.machine()
    print(
        f"Machine: nproc {os.cpu_count()}, {machine}, Python {platform.python_version()}, "
        f"load average {stats.load_at_start:.2f} at the start of the load, "
        f"{os.getloadavg()[0]:.2f} at the end.\n"
    )
    print("| figure | value |\n|---|---|")
    for name, value in figures:
        print(f"| {name} | {value} |")
    print("\n| criterion | measured | result |\n|---|---|---|")
    for name, value, passed in criteria:
        print(f"| {name} | {value} | {'PASS' if passed else 'FAIL'} |")
    if stats.failures:
        print("\nFirst failures:\n")
        for line in stats.failures[:10]:
            print(f"- {line}")
    if missing or extra or doubled:
        print(
            f"\nAudit mismatch: missing {missing[:10]}, extra {extra[:10]}, doubled {doubled[:10]}"
        )
    bad_switch = [(t, rid, m) for t, rid, m, good in stats.switches if not good]
    bad_switch += [
        (t, rid, f"audit tune {by_id.get(rid, {}).get('tune')}")
        for t, rid, _, _ in stats.switches
        if by_id.get(rid, {}).get("tune") != t
    ]
    if bad_switch:
        print(f"\nSwitches that did not take effect (tune, request id, answered by): {bad_switch}")
    if log_errors:
        print("\nFirst errors in the gateway log:\n")
        for line in log_errors:
            print(f"- `{line}`")
    return ok


def redis_summary(url: str) -> str:
    import redis

    client = redis.Redis.from_url(url)
    try:
        mem = client.info("memory")["used_memory"]
        return f"real redis-server, {client.dbsize()} keys, {mib(mem)} used at the end"
    finally:
        client.close()


# -- main ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the load (0.5 ok)")
    parser.add_argument("--clients", type=int, default=3, help="closed-loop clients (alpha, beta)")
    parser.add_argument("--switch-every", type=float, default=20.0, help="seconds between switches")
    parser.add_argument("--metered-rpm", type=int, default=6, help="the metered tenant's limit")
    parser.add_argument("--max-growth", type=float, default=MAX_GROWTH, help="RSS growth bound")
    parser.add_argument("--no-redis", action="store_true", help="in-memory state, no redis-server")
    parser.add_argument("--workdir", type=Path, default=None, help="keep everything here")
    args = parser.parse_args(argv)
    if args.minutes <= 0:
        parser.error("--minutes must be positive")
    if not (BUILD / "base").is_dir():
        raise SystemExit(f"no demo build in {BUILD}: run `make build-demo` first")

    from gateway.auth import new_key

    work = args.workdir or Path(tempfile.mkdtemp(prefix="tunegate-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    keys = {name: new_key() for name in ("alpha", "beta", "metered")}
    admin = new_key()
    tunes, policies = write_setup(work, keys, args.metered_rpm)
    redis_proc = None
    redis_url = None
    proc = None
    ok = False
    try:
        if not args.no_redis:
            redis_url, redis_proc = start_redis(work)
            log(f"redis-server at {redis_url}")
        url, proc, log_path = start_gateway(work, tunes, policies, admin, redis_url)
        log(f"gateway pid {proc.pid} at {url}; waiting for the engine (log: {log_path})")
        started = time.monotonic()
        asyncio.run(wait_ready(url, proc, log_path))
        log(f"ready after {time.monotonic() - started:.0f} s; load for {args.minutes:g} min")
        log_offset = log_path.stat().st_size
        stats = Stats()
        samples, elapsed, total_s = asyncio.run(run_load(url, proc.pid, keys, admin, args, stats))
        warmup_s = max(0.1 * total_s, min(30.0, 0.5 * total_s))
        log(f"load done: {len(stats.sent)} requests; SIGTERM to the gateway mid-stream")
        children = descendants(proc.pid)
        stopped = asyncio.run(drain(url, keys["alpha"], stats, proc, children))
        verified = verify_audit(work / "audit")
        records = read_audit(work / "audit")
        info = redis_summary(redis_url) if redis_url else "none (--no-redis): in-memory state"
        ending = Ending(stopped, verified, records, info, log_path, log_offset)
        ok = report(args, stats, samples, elapsed, warmup_s, ending)
        if not ok:
            print(f"\nWork folder (gateway log, audit): {work}\nGateway log tail:\n")
            print(log_tail(log_path, 30))
        return 0 if ok else 1
    finally:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if redis_proc is not None:
            redis_proc.terminate()
            redis_proc.wait(timeout=10)
        if args.workdir is None and ok:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
