"""What the gateway itself costs: against calling the upstream directly, and against LiteLLM.

Upstreams are `mock_vllm.py` servers (16 tokens; 0 ms and 50 ms before the answer; 20 ms between
streamed chunks), so everything measured beyond "direct" is the relay in front of them. The
gateway runs its full pipeline (pool engine, auth, policy, Redis rate limits on a real
`redis-server`, input and output safety rules, audit log, metrics, OpenTelemetry traces exported
to another mock, the OTLP sink); LiteLLM's proxy (one worker, master key, no database) is
installed into its own venv by `litellm_env.py`; `bare_relay.py` is the floor for CPU and for
the latency added at upstream 0 ms. Load comes from this process: asyncio + aiohttp, closed loop,
N keep-alive connections. Each comparison runs side by side in interleaved rounds (round r:
direct, gateway, LiteLLM and, where it is the floor, the bare relay, each once) and reports the
median over rounds.

1. added p50/p99 latency (target minus direct, paired per round) at 1 and 32 connections,
   non-streamed chat, upstream 0 ms (the bare relay's beside it) and 50 ms;
2. peak requests/s with p99 < 50 ms and no errors, ramping 1..64 connections (upstream 0 ms);
   and at twice the most the gateway served in the ramp (open loop, fixed arrival rate), its
   goodput and how fast the excess is refused (429/503);
3. streaming: time to first token and mean gap between chunks at 1 and 64 concurrent streams;
4. CPU microseconds per request in the gateway's process tree against the bare relay's.

    .venv/bin/python loadtests/bench_overhead.py [--rounds 3] [--quick] [--no-litellm] [--engine]

With `--engine` (what `make bench` runs) it then runs `bench_engine.py`, the real engine
(in-process and pool mode against vLLM's own server on the demo model), and folds its figures
and its target into the same table.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
import litellm_env  # a sibling script, not a package module

ROOT = Path(__file__).resolve().parents[1]
KEY = "tg-bench-key-loopback"  # the bench tenant's key at the gateway
PLAIN_KEY = "tg-bench-plain-loopback"  # a tenant without output safety rules
OPEN_WARM_CONNECTIONS = 256  # the open loop's keep-alive connections, opened before it starts
# The overload runs: on connections the client opened before, and from a client with none.
OVERLOAD_ROWS = (("overload", "connections open"), ("overload_cold", "every connection new"))
OVERLOAD_INFLIGHT = 96  # TUNEGATE_MAX_INFLIGHT of gw0, above the ramp's 64 connections
UPSTREAM_KEY = "tg-bench-upstream-loopback"  # the mock servers' key
MASTER_KEY = "sk-bench-master-loopback"  # LiteLLM's master key
PROMPT = "My order has not arrived yet. What should I do?"
RAMP = (1, 2, 4, 8, 16, 32, 64)
P99_LIMIT_MS = 50.0

TENANTS = """\
default:
  limits:
    requests_per_minute: 100000000
    tokens_per_minute: 10000000000
    max_concurrent: 4096
    max_tokens: 256
  input_rules:
    max_messages: 64
  safety:
    input:
      - {{id: secrets-in, kind: api_key, action: block}}
      - {{id: private-key-in, kind: private_key, action: block}}
      - {{id: injection, kind: prompt_injection, action: flag}}
    output:
      - {{id: email-out, kind: email, action: redact}}
      - {{id: phone-out, kind: phone, action: redact}}
      - {{id: card-out, kind: payment_card, action: redact}}
      - {{id: secrets-out, kind: api_key, action: block}}
  audit_content: omit
tenants:
  - name: bench
    keys: [{{id: b1, sha256: {sha}}}]
    tunes: [support, legal, extract]
    default_tune: support
  - name: bench-plain  # no output rules: nothing is held back mid-stream
    keys: [{{id: p1, sha256: {plain_sha}}}]
    tunes: [support, legal, extract]
    default_tune: support
    safety:
      output: []
"""


@dataclass
class Profile:
    rounds: int
    ramp: tuple[int, ...]
    ramp_s: float  # one closed-loop run in the ramp (upstream 0 ms)
    delay_s: float  # one run at upstream 50 ms
    stream_s: float  # one streaming run
    cpu_requests: int  # requests per CPU reading
    cpu_conc: int = 8
    overload_s: float = 4.0  # one open-loop run at twice the peak rate


FULL = Profile(rounds=3, ramp=RAMP, ramp_s=2.0, delay_s=3.0, stream_s=2.5, cpu_requests=1000)
QUICK = Profile(
    rounds=1,
    ramp=(1, 8, 32),
    ramp_s=0.3,
    delay_s=0.6,
    stream_s=0.8,
    cpu_requests=100,
    overload_s=2.0,
)


# -- processes -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Processes:
    """Every process the benchmark starts, each in its own session; all stopped at the end."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(
        self, name: str, cmd: list[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        with (self.logs / f"{name}.log").open("wb") as out:
            proc = subprocess.Popen(
                cmd,
                cwd=ROOT,
                env=env or os.environ.copy(),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        proc.name = name  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def wait_http(self, proc: subprocess.Popen[bytes], url: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                log = self.logs / f"{proc.name}.log"  # type: ignore[attr-defined]
                tail = log.read_text(errors="replace").strip().splitlines()[-5:]
                raise SystemExit(f"{proc.name} exited ({proc.returncode}):\n" + "\n".join(tail))  # type: ignore[attr-defined]
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise SystemExit(f"{url} not ready within {timeout:.0f} s")

    def stop_all(self) -> None:
        """Last started, first stopped, each waited for: the gateways go while the upstreams
        and the span sink they flush to still answer."""
        for proc in reversed(self.procs):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    continue
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def write_policies(tmp: Path) -> None:
    """The bench tenants' policy file, under `tmp/policies`."""
    from gateway.auth import hash_key

    (tmp / "policies").mkdir()
    (tmp / "policies" / "tenants.yaml").write_text(
        TENANTS.format(sha=hash_key(KEY), plain_sha=hash_key(PLAIN_KEY))
    )


def start_mock(
    procs: Processes, name: str, *, delay_ms: float = 0, gap_ms: float = 0, context: int = 512
) -> str:
    port = free_port()
    cmd = [sys.executable, "loadtests/mock_vllm.py", "--port", str(port), "--tokens", "16"]
    cmd += ["--delay-ms", str(delay_ms), "--gap-ms", str(gap_ms), "--api-key", UPSTREAM_KEY]
    cmd += ["--max-model-len", str(context)]
    proc = procs.start(name, cmd)
    url = f"http://127.0.0.1:{port}"
    procs.wait_http(proc, f"{url}/health", 30)
    return url


def start_redis(procs: Processes) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    cmd += ["--appendonly", "no"]
    proc = procs.start("redis", cmd)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return f"redis://127.0.0.1:{port}/0", proc
        except OSError:
            time.sleep(0.1)
    raise SystemExit("redis-server did not start")


def start_gateway(
    procs: Processes,
    tmp: Path,
    name: str,
    upstream: str,
    redis_url: str | None,
    sink: str,
    extra: dict[str, str] | None = None,
) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    env = {
        **os.environ,
        "TUNEGATE_PORT": str(port),
        "TUNEGATE_ENGINE__KIND": "pool",
        "TUNEGATE_ENGINE__POOL_URLS": orjson.dumps([upstream]).decode(),
        "TUNEGATE_ENGINE__UPSTREAM_API_KEY": UPSTREAM_KEY,
        "TUNEGATE_ENGINE__MODEL_PATH": "build/demo/base",
        "TUNEGATE_POLICIES_DIR": str(tmp / "policies"),
        "TUNEGATE_AUDIT_DIR": str(tmp / f"audit-{name}"),
        "TUNEGATE_REDIS_PREFIX": f"tg-{name}:",
        "TUNEGATE_LOG_LEVEL": "warning",
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"{sink}/v1/traces",
        "OTEL_SERVICE_NAME": f"tunegate-bench-{name}",
        **(extra or {}),
    }
    env.pop("TUNEGATE_WORKERS", None)
    if redis_url is None:  # the in-memory store
        env.pop("TUNEGATE_REDIS_URL", None)
    else:
        env["TUNEGATE_REDIS_URL"] = redis_url
    proc = procs.start(name, [sys.executable, "-m", "gateway", "serve"], env)
    return f"http://127.0.0.1:{port}", proc


def start_bare_relay(procs: Processes, upstream: str) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    cmd = [sys.executable, "loadtests/bare_relay.py", "--port", str(port)]
    proc = procs.start("bare", cmd + ["--upstream", upstream, "--api-key", UPSTREAM_KEY])
    url = f"http://127.0.0.1:{port}"
    procs.wait_http(proc, f"{url}/health", 30)
    return url, proc


# -- load ------------------------------------------------------------------------------------


@dataclass
class Target:
    url: str  # the chat completions endpoint
    key: str
    model: str

    def body(self, *, stream: bool = False) -> bytes:
        req = {
            "model": self.model,
            "temperature": 0,
            "max_tokens": 16,
            "messages": [{"role": "user", "content": PROMPT}],
        }
        if stream:
            req["stream"] = True
        return orjson.dumps(req)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"}


@dataclass
class Run:
    lat_ms: list[float]
    errors: int
    wall_s: float
    first_error: str | None = None

    @property
    def rps(self) -> float:
        return len(self.lat_ms) / self.wall_s if self.wall_s else 0.0

    @property
    def p50(self) -> float:
        return pct(self.lat_ms, 50)

    @property
    def p99(self) -> float:
        return pct(self.lat_ms, 99)


def pct(values: list[float], p: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def session(conc: int) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=conc, limit_per_host=conc),
        timeout=aiohttp.ClientTimeout(total=60),
    )


async def closed_loop(t: Target, conc: int, seconds: float, count: int | None = None) -> Run:
    """`conc` workers, each sending the next request when its answer is in; for `seconds`, or
    for `count` requests. One unrecorded request per connection first opens the connections."""
    body, headers = t.body(), t.headers
    lat: list[float] = []
    errors = 0
    first_error: str | None = None
    async with session(conc) as s:

        async def once() -> None:
            async with s.post(t.url, data=body, headers=headers) as r:
                data = await r.read()
                if r.status != 200:
                    raise RuntimeError(f"{r.status} {data[:120]!r}")

        await asyncio.gather(*(once() for _ in range(conc)), return_exceptions=True)
        left = count
        start = time.perf_counter()
        stop = start + seconds

        async def worker() -> None:
            nonlocal errors, left, first_error
            while time.perf_counter() < stop:
                if left is not None:
                    if left <= 0:
                        return
                    left -= 1
                t0 = time.perf_counter()
                try:
                    await once()
                    lat.append((time.perf_counter() - t0) * 1000)
                except (aiohttp.ClientError, RuntimeError, OSError, TimeoutError) as exc:
                    errors += 1
                    first_error = first_error or f"{type(exc).__name__}: {exc}"

        await asyncio.gather(*(worker() for _ in range(conc)))
        wall = time.perf_counter() - start
    return Run(lat, errors, wall, first_error)


def has_content(event: str | bytes) -> bool:
    """Whether a streamed chat event carries text. Servers send the assistant's role first, with
    empty content (vLLM's does), before any token: time to first token is to the first text."""
    choices = orjson.loads(event).get("choices") or ()
    return bool(choices and (choices[0].get("delta") or {}).get("content"))


@dataclass
class StreamRun:
    ttft_ms: list[float] = field(default_factory=list)
    gaps_ms: list[float] = field(default_factory=list)
    chunks: list[int] = field(default_factory=list)
    errors: int = 0


async def stream_loop(t: Target, conc: int, seconds: float) -> StreamRun:
    """Closed loop of streamed chats: time to the first content chunk, and every gap between
    consecutive content chunks of a stream. Workers start spread over one stream's length, so
    the streams do not all begin (and queue for admission) in the same instant."""
    body, headers = t.body(stream=True), t.headers
    out = StreamRun()
    async with session(conc) as s:

        async def once(record: bool) -> None:
            t0 = time.perf_counter()
            last: float | None = None
            n = 0
            async with s.post(t.url, data=body, headers=headers) as r:
                if r.status != 200:
                    raise RuntimeError(str(r.status))
                async for line in r.content:
                    if not line.startswith(b"data: {") or not has_content(line[6:]):
                        continue
                    now = time.perf_counter()
                    if record:
                        if last is None:
                            out.ttft_ms.append((now - t0) * 1000)
                        else:
                            out.gaps_ms.append((now - last) * 1000)
                    last = now
                    n += 1
            if record:
                out.chunks.append(n)

        t0 = time.perf_counter()
        await asyncio.gather(*(once(False) for _ in range(conc)), return_exceptions=True)
        spread = (time.perf_counter() - t0) / conc  # about one stream's length over conc
        stop = time.perf_counter() + seconds

        async def worker(i: int) -> None:
            await asyncio.sleep(i * spread)  # streams start staggered, as in steady traffic
            while time.perf_counter() < stop:
                try:
                    await once(True)
                except (aiohttp.ClientError, RuntimeError, OSError, TimeoutError):
                    out.errors += 1

        await asyncio.gather(*(worker(i) for i in range(conc)))
    return out


# -- CPU -------------------------------------------------------------------------------------

TICK = os.sysconf("SC_CLK_TCK")


def stat_fields(path: Path) -> list[str]:
    """A `/proc/.../stat` file's fields after the command's name: state, ppid, ..., utime at
    index 11 and stime at 12 (the name, in brackets, may hold spaces)."""
    return path.read_text().rpartition(")")[2].split()


def _proc_stats() -> dict[int, tuple[int, float]]:
    """Every live process: its parent and its utime + stime in seconds (one /proc scan)."""
    stats: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = stat_fields(entry / "stat")
        except OSError:
            continue
        stats[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / TICK)
    return stats


def tree_pids(*roots: int, stats: dict[int, tuple[int, float]] | None = None) -> set[int]:
    """These processes and every live descendant."""
    stats = _proc_stats() if stats is None else stats
    tree, frontier = set(roots), list(roots)
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, _) in stats.items():
            if ppid == parent and pid not in tree:
                tree.add(pid)
                frontier.append(pid)
    return tree


def tree_cpu_s(*roots: int) -> float:
    """utime + stime of these processes and every live descendant, in seconds (one /proc scan)."""
    stats = _proc_stats()
    return sum(stats[p][1] for p in tree_pids(*roots, stats=stats) if p in stats)


async def cpu_per_request(
    t: Target, pid: int, n: int, conc: int, others: dict[str, int]
) -> dict[str, float]:
    """CPU µs per request answered of the process tree at `pid` (and of `others`, by name) over
    `n` requests at `conc` connections; `us_sent`: per request sent, refusals and errors too."""
    await closed_loop(t, conc, 30, count=conc * 4)  # warm
    before = tree_cpu_s(pid)
    before_o = {k: tree_cpu_s(p) for k, p in others.items()}
    run = await closed_loop(t, conc, 120, count=n)
    used = tree_cpu_s(pid) - before
    done = max(1, len(run.lat_ms))
    res = {
        "us": used / done * 1e6,
        "us_sent": used / max(1, len(run.lat_ms) + run.errors) * 1e6,
        "errors": float(run.errors),
        "p50": run.p50,
        "p99": run.p99,
    }
    for k, p in others.items():
        res[k] = (tree_cpu_s(p) - before_o[k]) / done * 1e6
    return res


# -- the benchmark ---------------------------------------------------------------------------


def med(values: list[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return statistics.median(values) if values else math.nan


def machine_line(argv: list[str], load: float, script: str = "loadtests/bench_overhead.py") -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    exe = sys.executable
    with_root = Path(exe).absolute()
    if with_root.is_relative_to(ROOT):
        exe = str(with_root.relative_to(ROOT))
    command = shlex.join([exe, script, *argv])
    return (
        f"Machine: nproc {len(os.sched_getaffinity(0))}, {model}, Python "
        f"{platform.python_version()}, load average {load:.2f} at the start. Command: `{command}`"
    )


def fmt(v: float, digits: int = 1) -> str:
    return "n/a" if v is None or math.isnan(v) else f"{v:.{digits}f}"


def signed(v: float, digits: int = 2) -> str:
    return "n/a" if v is None or math.isnan(v) else f"{v:+.{digits}f}"


def streams_of(n: int) -> str:
    return f"{n} stream" + ("s" if n != 1 else "")


def ratio(a: float, b: float, digits: int = 2) -> str:
    if a is None or b is None or math.isnan(a) or math.isnan(b) or b == 0:
        return "n/a"
    return f"{a / b:.{digits}f}"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


async def measure(
    args: argparse.Namespace, prof: Profile, env: dict[str, object]
) -> dict[str, object]:
    direct0: Target = env["direct0"]  # type: ignore[assignment]
    direct50: Target = env["direct50"]  # type: ignore[assignment]
    directg: Target = env["directg"]  # type: ignore[assignment]
    gw0: Target = env["gw0"]  # type: ignore[assignment]
    gw50: Target = env["gw50"]  # type: ignore[assignment]
    gwg: Target = env["gwg"]  # type: ignore[assignment]
    gwg_plain: Target = env["gwg_plain"]  # type: ignore[assignment]
    ll0: Target | None = env.get("ll0")  # type: ignore[assignment]
    ll50: Target | None = env.get("ll50")  # type: ignore[assignment]
    out: dict[str, object] = {}
    errors: list[str] = []

    # 1 + 2: the ramp at upstream 0 ms (its runs at 1 and 32 connections give the 0 ms latency).
    # The bare relay runs at 1 and 32 connections only: what the same HTTP server and a pooled
    # upstream client add with none of the pipeline, beside the gateway's added latency.
    targets0 = {"direct": direct0, "gateway": gw0, "bare": env["bare"]}
    if ll0:
        targets0["litellm"] = ll0
    ramp: dict[tuple[str, int], list[Run]] = {}
    active = set(targets0) - {"bare"}
    for conc in prof.ramp:
        keep = {n for n in targets0 if n in active or conc in (1, 32)}
        for _ in range(prof.rounds):
            for name, t in targets0.items():
                if name in keep:
                    ramp.setdefault((name, conc), []).append(
                        await closed_loop(t, conc, prof.ramp_s)
                    )
        for name in keep:
            runs = ramp[(name, conc)]
            if med([r.p99 for r in runs]) >= P99_LIMIT_MS or any(r.errors for r in runs):
                active.discard(name)  # a closed loop only gets slower with more connections
        log(
            f"ramp {conc:>2} conn: "
            + ", ".join(
                f"{n} {med([r.rps for r in ramp[(n, conc)]]):.0f} rps "
                f"p99 {med([r.p99 for r in ramp[(n, conc)]]):.1f} ms"
                for n in targets0
                if (n, conc) in ramp
            )
        )
    peak: dict[str, tuple[float, int]] = {}
    saturation: dict[str, float] = {}  # the most req/s a run reached without errors
    for (name, conc), runs in ramp.items():
        for r in runs:
            if r.errors:
                errors.append(f"{name} at {conc} conn: {r.errors} errors ({r.first_error})")
        if name == "bare":  # not ramped: no peak of its own
            continue
        rps, p99 = med([r.rps for r in runs]), med([r.p99 for r in runs])
        ok = p99 < P99_LIMIT_MS and not any(r.errors for r in runs)
        if ok and rps > peak.get(name, (0.0, 0))[0]:
            peak[name] = (rps, conc)
        if not any(r.errors for r in runs):
            saturation[name] = max(saturation.get(name, 0.0), rps)
    out["peak"] = peak

    latency: dict[tuple[int, int], dict[str, dict[str, float]]] = {}

    def added(runs: dict[str, list[Run]], conc: int, delay: int) -> None:
        base = runs["direct"]
        row: dict[str, dict[str, float]] = {
            "direct": {"p50": med([r.p50 for r in base]), "p99": med([r.p99 for r in base])}
        }
        for name, rs in runs.items():
            if name == "direct":
                continue
            row[name] = {
                q: med([getattr(r, q) - getattr(b, q) for r, b in zip(rs, base, strict=True)])
                for q in ("p50", "p99")
            }
        latency[(delay, conc)] = row

    for conc in (1, 32):
        if all((n, conc) in ramp for n in targets0):
            added({n: ramp[(n, conc)] for n in targets0}, conc, 0)

    # 1 at upstream 50 ms
    targets50 = {"direct": direct50, "gateway": gw50}
    if ll50:
        targets50["litellm"] = ll50
    for conc in (1, 32):
        runs50: dict[str, list[Run]] = {n: [] for n in targets50}
        for _ in range(prof.rounds):
            for name, t in targets50.items():
                runs50[name].append(await closed_loop(t, conc, prof.delay_s))
        for name, rs in runs50.items():
            for r in rs:
                if r.errors:
                    errors.append(f"{name} 50 ms at {conc} conn: {r.errors} ({r.first_error})")
        added(runs50, conc, 50)
        log(
            f"upstream 50 ms, {conc} conn: "
            + ", ".join(f"{n} p50 {med([r.p50 for r in rs]):.1f} ms" for n, rs in runs50.items())
        )
    out["latency"] = latency

    # 3 streaming
    streams: dict[int, dict[str, dict[str, float]]] = {}
    for conc in (1, 64):
        sr: dict[str, list[StreamRun]] = {"direct": [], "gateway": [], "plain": []}
        for _ in range(prof.rounds):
            sr["direct"].append(await stream_loop(directg, conc, prof.stream_s))
            sr["gateway"].append(await stream_loop(gwg, conc, prof.stream_s))
            sr["plain"].append(await stream_loop(gwg_plain, conc, prof.stream_s))
        streams[conc] = {
            n: {
                "ttft": med([med(r.ttft_ms) for r in rs]),
                "gap": med([statistics.fmean(r.gaps_ms) if r.gaps_ms else math.nan for r in rs]),
                "gap_med": med([med(r.gaps_ms) for r in rs]),
                "chunks": med([med([float(c) for c in r.chunks]) for r in rs]),
                "streams": float(sum(len(r.chunks) for r in rs)),
                "errors": float(sum(r.errors for r in rs)),
            }
            for n, rs in sr.items()
        }
        streams[conc]["added_ttft"] = {
            name: med(
                [
                    med(g.ttft_ms) - med(d.ttft_ms)
                    for g, d in zip(sr[who], sr["direct"], strict=True)
                ]
            )
            for name, who in (("ms", "gateway"), ("plain_ms", "plain"))
        }
        for n, rs in sr.items():
            if any(r.errors for r in rs):
                errors.append(f"{n} streams at {conc}: {sum(r.errors for r in rs)} errors")
        log(
            f"streams {conc}: "
            + ", ".join(
                f"{n} ttft {v['ttft']:.1f} ms gap {v['gap']:.2f} ms"
                for n, v in streams[conc].items()
                if n != "added_ttft"
            )
        )
    out["streams"] = streams

    # 4 CPU per request
    pids: dict[str, int] = env["pids"]  # type: ignore[assignment]
    cpu_targets = {"bare": (env["bare"], pids["bare"]), "gateway": (gw0, pids["gw0"])}
    if ll0:
        cpu_targets["litellm"] = (ll0, pids["litellm"])
    cpu: dict[str, list[dict[str, float]]] = {n: [] for n in cpu_targets}
    for _ in range(prof.rounds):
        for name, (t, pid) in cpu_targets.items():
            others = {"redis": pids["redis"], "upstream": pids["mock0"]}
            cpu[name].append(
                await cpu_per_request(t, pid, prof.cpu_requests, prof.cpu_conc, others)  # type: ignore[arg-type]
            )
    out["cpu"] = {n: {k: med([r[k] for r in rs]) for k in rs[0]} for n, rs in cpu.items()}
    log("cpu µs/request: " + ", ".join(f"{n} {v['us']:.0f}" for n, v in out["cpu"].items()))  # type: ignore[union-attr]
    for n, v in out["cpu"].items():  # type: ignore[union-attr]
        if v["errors"]:
            errors.append(f"{n} CPU runs: {v['errors']:.0f} errors (median)")
    # 5 overload: an open loop at twice the most the gateway served in the ramp (its saturation),
    # once on connections opened beforehand (steady overload: clients that keep their
    # connections, as the closed loops do) and once from a client with none open (a storm of new
    # connections on top of the overload); interleaved, the same rate.
    base_rps = saturation.get("gateway", 0.0)
    if base_rps > 0:
        runs: dict[str, list[OpenRun]] = {key: [] for key, _ in OVERLOAD_ROWS}
        for _ in range(prof.rounds):
            runs["overload"].append(
                await open_loop(gw0, 2 * base_rps, prof.overload_s, warm=OPEN_WARM_CONNECTIONS)
            )
            runs["overload_cold"].append(await open_loop(gw0, 2 * base_rps, prof.overload_s))
        for key, rs in runs.items():
            out[key] = {
                "saturation": base_rps,
                # the target's yardstick: the ramp's peak (p99 < 50 ms, no errors), as the issue
                # defines peak; saturation (the most served at any p99) is shown beside it
                "peak": peak.get("gateway", (0.0, 0))[0],
                "offered": 2 * base_rps,
                "sent": med([r.sent_rps for r in rs]),
                "goodput": med([r.goodput for r in rs]),
                "ok_p50": med([pct(r.ok_ms, 50) for r in rs]),
                "ok_p99": med([pct(r.ok_ms, 99) for r in rs]),
                "rejected": med([float(len(r.rejected_ms)) / r.seconds for r in rs]),
                "reject_p99": med([pct(r.rejected_ms, 99) for r in rs]),
                "statuses": rs[-1].statuses,
                "failed": float(sum(r.failed for r in rs)),
            }
            log(
                f"{key} at {2 * base_rps:.0f} req/s: goodput "
                f"{out[key]['goodput']:.0f} req/s, rejected "  # type: ignore[index]
                f"{out[key]['rejected']:.0f} req/s, their p99 "  # type: ignore[index]
                f"{out[key]['reject_p99']:.0f} ms"  # type: ignore[index]
            )
    out["errors"] = errors
    return out


@dataclass
class OpenRun:
    seconds: float  # first request sent to last answer in
    sent_rps: float
    ok_ms: list[float]
    rejected_ms: list[float]  # 429 and 503 answers
    failed: int  # anything else: errors, timeouts, 5xx other than 503
    statuses: dict[int, int]

    @property
    def goodput(self) -> float:
        return len(self.ok_ms) / self.seconds


async def open_loop(t: Target, rate: float, seconds: float, warm: int = 0) -> OpenRun:
    """Requests at a fixed arrival rate (not waiting for answers), for `seconds`; each one's
    status and latency. Goodput is the 200s over the time from the first request sent to the
    last answer in, so a backlog served late does not count as throughput. `warm`: open that
    many keep-alive connections first (one unrecorded request each, then a second's pause);
    without, every request of the first second or so opens a new connection."""
    body, headers = t.body(), t.headers
    ok: list[float] = []
    rejected: list[float] = []
    statuses: dict[int, int] = {}
    failed = 0
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=1024, limit_per_host=1024),
        timeout=aiohttp.ClientTimeout(total=30),
    ) as s:

        async def once() -> None:
            nonlocal failed
            t0 = time.perf_counter()
            try:
                async with s.post(t.url, data=body, headers=headers) as r:
                    await r.read()
                    status = r.status
            except (aiohttp.ClientError, OSError, TimeoutError):
                failed += 1
                return
            ms = (time.perf_counter() - t0) * 1000
            statuses[status] = statuses.get(status, 0) + 1
            if status == 200:
                ok.append(ms)
            elif status in (429, 503):
                rejected.append(ms)
            else:
                failed += 1

        if warm:

            async def unrecorded() -> None:
                async with s.post(t.url, data=body, headers=headers) as r:
                    await r.read()

            await asyncio.gather(*(unrecorded() for _ in range(warm)), return_exceptions=True)
            await asyncio.sleep(1.0)  # the warm-up's own backlog clears
        tasks = []
        start = time.perf_counter()
        n = int(rate * seconds)
        for i in range(n):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(once()))
        sent_s = time.perf_counter() - start
        await asyncio.gather(*tasks)
        total_s = time.perf_counter() - start
    return OpenRun(total_s, n / sent_s if sent_s else 0.0, ok, rejected, failed, statuses)


def overload_met(over: dict[str, float]) -> bool:
    """The overload target: goodput ≥ 0.9x the ramp's peak, none failed, refusals' p99 under the
    line. Judged against the ramp's saturation as well: where a ramp's peak came out low (its last
    step just over the p99 line), goodput over that peak alone would pass without being met."""
    fast = over["reject_p99"] <= P99_LIMIT_MS or not over["rejected"]
    most = max(over["peak"], over["saturation"])
    return over["goodput"] >= 0.9 * most and not over["failed"] and fast


def report(
    res: dict[str, object],
    prof: Profile,
    with_ll: bool,
    why_not: str | None,
    argv: list[str],
    load: float,
    engine: tuple[list[str], list[str]] | None = None,
) -> str:
    """The one table (and the targets under it); `engine`: bench_engine.py's rows and target
    lines, folded in."""
    lines = [machine_line(argv, load), ""]
    if why_not:
        lines += [f"LiteLLM not run: {why_not}", ""]
    lines += [
        f"Median of {prof.rounds} interleaved round(s); upstream: mock vLLM server, 16 tokens; "
        "'added' = target minus direct in the same round.",
        "",
    ]
    head = "| figure | gateway | direct / bare |" + (" LiteLLM |" if with_ll else "") + " ratio |"
    lines += [head, "|" + "---|" * (head.count("|") - 1)]

    def row(fig: str, gw: str, base: str, ll: str, r: str) -> None:
        cells = [fig, gw, base] + ([ll] if with_ll else []) + [r]
        lines.append("| " + " | ".join(cells) + " |")

    lat = res["latency"]  # type: ignore[assignment]
    for delay in (0, 50):
        for conc in (1, 32):
            cell = lat.get((delay, conc))  # type: ignore[union-attr]
            if not cell:
                continue
            for q in ("p50", "p99"):
                g = cell["gateway"][q]
                ll = cell.get("litellm", {}).get(q, math.nan)
                base = fmt(cell["direct"][q], 2)
                label = f"direct: its {q}"
                bare = cell.get("bare", {}).get(q)
                if bare is not None:  # upstream 0 ms: the bare relay beside it
                    base += f"; bare {signed(bare)}"
                    label += ", bare: bare_relay.py's added"
                ratios = [f"{ratio(g, ll)} gw/LiteLLM"] if with_ll else []
                if bare is not None and with_ll:
                    ratios.append(f"{ratio(bare, ll)} bare/LiteLLM")
                row(
                    f"added {q} ms, {conc} conn, upstream {delay} ms ({label})",
                    signed(g),
                    base,
                    signed(ll),
                    ", ".join(ratios),
                )
    peak = res["peak"]  # type: ignore[assignment]

    def pk(name: str) -> str:
        v = peak.get(name)  # type: ignore[union-attr]
        return f"{v[0]:.0f} @{v[1]} conn" if v else "none qualified"

    def pkv(name: str) -> float:
        v = peak.get(name)  # type: ignore[union-attr]
        return v[0] if v else math.nan

    row(
        f"peak req/s, p99 < {P99_LIMIT_MS:.0f} ms, no errors, upstream 0 ms",
        pk("gateway"),
        pk("direct"),
        pk("litellm"),
        (f"{ratio(pkv('gateway'), pkv('litellm'))} gw/LiteLLM, " if with_ll else "")
        + f"{ratio(pkv('gateway'), pkv('direct'))} gw/direct",
    )
    streams = res["streams"]  # type: ignore[assignment]
    for conc in (1, 64):
        s = streams.get(conc)  # type: ignore[union-attr]
        if not s:
            continue
        g, d = s["gateway"], s["direct"]
        row(
            f"stream TTFT ms, {streams_of(conc)}, upstream gap 20 ms",
            fmt(g["ttft"], 2),
            fmt(d["ttft"], 2),
            "",
            f"{signed(s['added_ttft']['ms'])} ms added",
        )
        row(
            f"stream TTFT ms, {streams_of(conc)}, a tenant without output rules",
            fmt(s["plain"]["ttft"], 2),
            fmt(d["ttft"], 2),
            "",
            f"{signed(s['added_ttft']['plain_ms'])} ms added",
        )
        row(
            f"stream gap between chunks ms, mean (median), {streams_of(conc)}",
            f"{fmt(g['gap'], 2)} ({fmt(g['gap_med'], 2)})",
            f"{fmt(d['gap'], 2)} ({fmt(d['gap_med'], 2)})",
            "",
            f"{ratio(g['gap'], d['gap'], 3)} ({ratio(g['gap_med'], d['gap_med'], 3)}) gw/direct",
        )
    cpu = res["cpu"]  # type: ignore[assignment]
    gcpu = cpu["gateway"]["us"]  # type: ignore[index]
    bcpu = cpu["bare"]["us"]  # type: ignore[index]
    lcpu = cpu.get("litellm", {}).get("us", math.nan)  # type: ignore[union-attr]
    row(
        "CPU µs per request in the relay's process tree (direct / bare: bare_relay.py)",
        fmt(gcpu, 0),
        fmt(bcpu, 0),
        fmt(lcpu, 0),
        f"{ratio(gcpu, bcpu)} gw/bare" + (f", {ratio(gcpu, lcpu)} gw/LiteLLM" if with_ll else ""),
    )
    for key, how in OVERLOAD_ROWS:
        over = res.get(key)
        if not over:
            continue
        st = ", ".join(f"{k}: {v}" for k, v in sorted(over["statuses"].items()))  # type: ignore[index, union-attr]
        row(
            f"at 2x saturation, {how} ({over['offered']:.0f} req/s offered, "  # type: ignore[index]
            f"{over['sent']:.0f} sent): goodput req/s; p50/p99 ms of 200s; "
            f"rejections/s, their p99 ms ({st}; max in flight {OVERLOAD_INFLIGHT})",
            f"{over['goodput']:.0f}; {over['ok_p50']:.0f}/{over['ok_p99']:.0f}; "  # type: ignore[index]
            f"{over['rejected']:.0f}, {over['reject_p99']:.1f} ms",  # type: ignore[index]
            "",
            "",
            f"{ratio(over['goodput'], over['peak'])} goodput/peak "  # type: ignore[index]
            f"({over['peak']:.0f} req/s), "  # type: ignore[index]
            f"{ratio(over['goodput'], over['saturation'])} goodput/saturation "  # type: ignore[index]
            f"({over['saturation']:.0f} req/s), "  # type: ignore[index]
            f"{over['failed']:.0f} failed",  # type: ignore[index]
        )
    if engine is not None:
        for line in engine[0]:  # figure | gateway | direct | (LiteLLM) | ratio
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) == 5:
                row(cells[0], cells[1], cells[2], cells[3], cells[4])
            else:
                lines.append(line)
    redis_us = cpu["gateway"].get("redis", math.nan)  # type: ignore[union-attr]
    lines += [
        "",
        f"Besides the gateway's own CPU, each of its requests cost {fmt(redis_us, 0)} µs in "
        f"redis-server; the upstream mock used {fmt(cpu['gateway'].get('upstream', math.nan), 0)} "  # type: ignore[union-attr]
        f"µs per request behind the gateway and {fmt(cpu['bare'].get('upstream', math.nan), 0)} "  # type: ignore[union-attr]
        "behind the bare relay (the gateway streams from the upstream only when its client "
        "streams).",
    ]
    chunk_note = "; ".join(
        f"{streams_of(c)}: gateway {s['gateway']['chunks']:.0f}, direct {s['direct']['chunks']:.0f}"
        for c, s in sorted(streams.items())  # type: ignore[union-attr]
    )
    if chunk_note:
        lines.append(
            f"Content chunks per stream (median): {chunk_note}. The mean gap is taken over the "
            "gaps between a stream's content chunks; text held back by the output safety rules "
            "delays the first chunk and shortens the gaps after it by as much."
        )
    if res["errors"]:
        lines += ["", "Errors: " + "; ".join(res["errors"][:8])]  # type: ignore[index]

    # targets
    def verdict(ok: bool | None) -> str:
        return "n/a" if ok is None else ("PASS" if ok else "MISS")

    def le(a: float, b: float) -> bool | None:
        return None if math.isnan(a) or math.isnan(b) else a <= b

    lines += ["", "Targets:", "", "| target | measured | result |", "|---|---|---|"]
    for delay in (0, 50):
        cell = lat.get((delay, 1))  # type: ignore[union-attr]
        if not cell:
            continue
        g = cell["gateway"]["p50"]
        ll = cell.get("litellm", {}).get("p50", math.nan)
        bare = cell.get("bare", {}).get("p50")
        floor = f" (a bare relay: {signed(bare)})" if bare is not None else ""
        lines.append(
            f"| added p50 at 1 conn ≤ 1/10 of LiteLLM's (upstream {delay} ms) "
            f"| {signed(g)} vs {signed(ll)} ms{floor} | {verdict(le(g, ll / 10))} |"
        )
    lines.append(
        f"| peak req/s ≥ 10x LiteLLM's | {fmt(pkv('gateway'), 0)} vs {fmt(pkv('litellm'), 0)} "
        f"| {verdict(le(10 * pkv('litellm'), pkv('gateway')))} |"
    )
    for conc in (1, 64):
        s = streams.get(conc)  # type: ignore[union-attr]
        if not s:
            continue
        g, d = s["gateway"]["gap"], s["direct"]["gap"]
        lines.append(
            f"| streaming mean gap ≤ 1.02x direct ({streams_of(conc)}) | {ratio(g, d, 3)}x "
            f"(median gap: {ratio(s['gateway']['gap_med'], s['direct']['gap_med'], 3)}x) "
            f"| {verdict(le(g, 1.02 * d))} |"
        )
    for conc in (1, 64):
        s = streams.get(conc)  # type: ignore[union-attr]
        if not s:
            continue
        a, b = s["added_ttft"]["ms"], s["added_ttft"]["plain_ms"]
        lines.append(
            f"| added TTFT ≤ 2 ms ({streams_of(conc)}) | {signed(a)} ms with output rules, "
            f"{signed(b)} ms without | {verdict(le(a, 2.0))} with, {verdict(le(b, 2.0))} without |"
        )
    lines.append(
        f"| CPU per request ≤ 2x bare relay | {ratio(gcpu, bcpu)}x "
        f"| {verdict(le(gcpu, 2 * bcpu))} |"
    )
    for key, how in OVERLOAD_ROWS:
        over = res.get(key)
        if not over:
            continue
        lines.append(
            f"| at 2x the saturating load, goodput ≥ 0.9x peak (and saturation), rejections fast "
            f"429/503s ({how}) "
            f"| {ratio(over['goodput'], over['peak'])}x peak "  # type: ignore[index]
            f"({ratio(over['goodput'], over['saturation'])}x saturation), rejections p99 "  # type: ignore[index]
            f"{over['reject_p99']:.1f} ms, {over['failed']:.0f} failed "  # type: ignore[index]
            f"| {verdict(overload_met(over))} |"  # type: ignore[arg-type]
        )
    if engine is not None:
        lines += [f"| {t.removeprefix('TARGET ')} |" for t in engine[1]]
    return "\n".join(lines)


def engine_rows(rounds: int, seconds: float) -> tuple[list[str], list[str]]:
    """bench_engine.py (the real engine: in-process and pool mode against vLLM's own server),
    run after everything here has stopped, as rows for this table."""
    cmd = [sys.executable, "loadtests/bench_engine.py", "--rounds", str(rounds), "--rows"]
    cmd += ["--seconds", str(seconds)]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        tail = " ".join(out.stderr.strip().splitlines()[-3:])
        return [f"| real engine: bench_engine.py failed ({tail[:300]}) |  |  |  |  |"], []
    lines = out.stdout.splitlines()
    return [x for x in lines if x.startswith("| ")], [x for x in lines if x.startswith("TARGET ")]


def adapter_on(upstream: str, prefix: str = "support") -> str:
    req = urllib.request.Request(
        f"{upstream}/v1/models", headers={"Authorization": f"Bearer {UPSTREAM_KEY}"}
    )
    with urllib.request.urlopen(req, timeout=5) as r:
        models = orjson.loads(r.read())["data"]
    names = [m["id"] for m in models if m.get("parent") and m["id"].startswith(prefix)]
    if not names:
        raise SystemExit(f"the gateway did not load `{prefix}` onto {upstream}")
    return names[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 3)")
    ap.add_argument("--quick", action="store_true", help="tiny counts: a smoke run")
    ap.add_argument("--no-litellm", action="store_true", help="leave LiteLLM out")
    ap.add_argument(
        "--engine",
        action="store_true",
        help="then run bench_engine.py (the real engine) and fold its figures into the table",
    )
    args = ap.parse_args()
    prof = QUICK if args.quick else FULL
    if args.rounds:
        prof.rounds = args.rounds
    started = time.monotonic()
    load = os.getloadavg()[0]

    exe, why_not = None, None
    if args.no_litellm:
        why_not = "--no-litellm"
    else:
        try:
            exe = litellm_env.ensure_litellm(log=log)
        except litellm_env.LiteLLMUnavailable as exc:
            why_not = f"install failed: {exc}"
    install_done = time.monotonic()

    with tempfile.TemporaryDirectory(prefix="tg-bench-") as tmp_name:
        tmp = Path(tmp_name)
        write_policies(tmp)
        procs = Processes(tmp)
        try:
            log("starting upstreams, redis, gateways, bare relay")
            mock0 = start_mock(procs, "mock0")
            mock50 = start_mock(procs, "mock50", delay_ms=50)
            mockg = start_mock(procs, "mockgap", gap_ms=20)
            sink = start_mock(procs, "otlp-sink")  # takes the gateways' spans, off the hot path
            redis_url, redis = start_redis(procs)
            overload = {"TUNEGATE_MAX_INFLIGHT": str(OVERLOAD_INFLIGHT)}
            gws = {
                name: start_gateway(
                    procs, tmp, name, up, redis_url, sink, overload if name == "gw0" else None
                )
                for name, up in (("gw0", mock0), ("gw50", mock50), ("gwg", mockg))
            }
            bare_url, bare = start_bare_relay(procs, mock0)
            env: dict[str, object] = {}
            for name, (url, proc) in gws.items():
                procs.wait_http(proc, f"{url}/readyz", 180)
                env[name] = Target(f"{url}/v1/chat/completions", KEY, "support")
            warm = asyncio.run(_warm([env[n] for n in gws]))  # type: ignore[misc]
            if warm:
                raise SystemExit(f"gateway warm-up failed: {warm}")
            models = {
                name: adapter_on(up) for name, up in (("0", mock0), ("50", mock50), ("g", mockg))
            }
            env["direct0"] = Target(f"{mock0}/v1/chat/completions", UPSTREAM_KEY, models["0"])
            env["direct50"] = Target(f"{mock50}/v1/chat/completions", UPSTREAM_KEY, models["50"])
            env["directg"] = Target(f"{mockg}/v1/chat/completions", UPSTREAM_KEY, models["g"])
            env["gwg_plain"] = Target(env["gwg"].url, PLAIN_KEY, "support")  # type: ignore[attr-defined]
            bare_model = models["0"]
            env["bare"] = Target(f"{bare_url}/v1/chat/completions", "unused", bare_model)
            pids = {"gw0": gws["gw0"][1].pid, "bare": bare.pid, "redis": redis.pid}
            pids["mock0"] = next(p.pid for p in procs.procs if p.name == "mock0")  # type: ignore[attr-defined]
            if exe is not None:
                log("starting LiteLLM's proxy")
                port = free_port()
                cfg = tmp / "litellm.yaml"
                litellm_env.write_config(
                    cfg,
                    {
                        "support": (models["0"], f"{mock0}/v1"),
                        "support-50": (models["50"], f"{mock50}/v1"),
                    },
                    UPSTREAM_KEY,
                    MASTER_KEY,
                )
                try:
                    ll = litellm_env.start_proxy(exe, cfg, port, tmp / "litellm.log")
                    procs.procs.append(ll)
                    ll.name = "litellm"  # type: ignore[attr-defined]
                    url = f"http://127.0.0.1:{port}/v1/chat/completions"
                    env["ll0"] = Target(url, MASTER_KEY, "support")
                    env["ll50"] = Target(url, MASTER_KEY, "support-50")
                    pids["litellm"] = ll.pid
                    problem = asyncio.run(_warm([env["ll0"], env["ll50"]]))  # type: ignore[list-item]
                    if problem:
                        raise litellm_env.LiteLLMUnavailable(f"requests fail: {problem}")
                except litellm_env.LiteLLMUnavailable as exc:
                    why_not = f"the proxy did not serve: {exc}"
                    env.pop("ll0", None)
                    env.pop("ll50", None)
            env["pids"] = pids
            ready = time.monotonic()
            log(f"all up in {ready - install_done:.0f} s; measuring")
            res = asyncio.run(measure(args, prof, env))
        finally:
            procs.stop_all()
    with_ll = "ll0" in env
    engine = None
    if args.engine:
        log("the real engine: bench_engine.py")
        engine = engine_rows(3 if not args.quick else 1, 3.0 if not args.quick else 1.5)
    print(report(res, prof, with_ll, why_not, sys.argv[1:], load, engine))
    print(
        f"\nWall time: {time.monotonic() - install_done:.0f} s "
        f"(measuring {time.monotonic() - ready:.0f} s"
        + (
            f"; LiteLLM install {install_done - started:.0f} s"
            if install_done - started > 5
            else ""
        )
        + ")."
    )


async def _warm(targets: list[Target]) -> str | None:
    """A few requests through each target (loads the tune onto the upstream); the first error."""
    async with session(4) as s:
        for t in targets:
            for _ in range(3):
                try:
                    async with s.post(t.url, data=t.body(), headers=t.headers) as r:
                        data = await r.read()
                        if r.status != 200:
                            return f"{t.url}: {r.status} {data[:200]!r}"
                except aiohttp.ClientError as exc:
                    return f"{t.url}: {exc}"
    return None


if __name__ == "__main__":
    main()
