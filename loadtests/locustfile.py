"""Locust scenarios for Tunegate: well-behaved tenants and a noisy one, loopback only.

`run_locust.py` starts the gateway (pool mode over a mock vLLM upstream, real Redis) and runs
this file headless, twice: the quiet tenants alone, then with the noisy tenant added. Everything
comes from environment variables it sets:

- `TG_LOCUST_HOST`: the gateway's base URL (loopback);
- `TG_LOCUST_KEYS`: JSON `{"quiet-a": KEY, "quiet-b": KEY, "noisy": KEY}`;
- `TG_LOCUST_QUIET_USERS`: users per quiet tenant (default 6);
- `TG_LOCUST_NOISY_USERS`, `TG_LOCUST_NOISY_RPS`: the noisy tenant's users and the requests per
  second they send together (ten times its `requests_per_minute` / 60);
- `TG_LOCUST_RAW`: where to write, at the end of the run, every request's status, start (seconds
  into the run) and latency by request name, and when the noisy tenant sent its first and last
  request (JSON).

Quiet tenants (`QuietA`, `QuietB`) use their tunes and `default`, chat and completions, streamed
(read to `data: [DONE]`) and not, with a wait between requests that keeps them well within their
limits; anything but a complete 200 is a failure. The noisy tenant (`Noisy`) sends at a fixed
rate ten times its limit: a 429 with the OpenAI error envelope and `Retry-After` is the expected
answer beyond its limit (counted as a success), a 5xx or anything else is a failure. It is an
open loop: it keeps its rate however slow the answers get. Request names start with the tenant
(`quiet-a chat stream`), so locust's stats are per tenant.
"""

from __future__ import annotations

import collections
import os
import random
import time
from typing import Any

import gevent
import gevent.pool
import orjson
from locust import FastHttpUser, between, constant_throughput, events, task

HOST = os.environ.get("TG_LOCUST_HOST", "http://127.0.0.1:8000")
KEYS: dict[str, str] = orjson.loads(os.environ.get("TG_LOCUST_KEYS", "{}"))
QUIET_USERS = int(os.environ.get("TG_LOCUST_QUIET_USERS", "6"))
NOISY_USERS = int(os.environ.get("TG_LOCUST_NOISY_USERS", "4"))
NOISY_RPS = float(os.environ.get("TG_LOCUST_NOISY_RPS", "10"))
NOISY_INFLIGHT = 8  # requests in flight per noisy user at most
RAW_PATH = os.environ.get("TG_LOCUST_RAW")
MAX_TOKENS = 16

PROMPTS = (
    "My order has not arrived yet. What should I do?",
    "Can I cancel my contract early?",
    "Extract the order number from: order 48213 was shipped on Monday.",
    "How do I change the address on my account?",
    "What does the warranty cover?",
)

# name -> status ("exc" for a transport error) -> count; name -> [seconds into the run at the
# request's start, latency ms] for every request
STATUSES: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
FAILURES: collections.Counter[str] = collections.Counter()  # name -> failed requests
SAMPLES: dict[str, list[tuple[float, float]]] = collections.defaultdict(list)
NOISY_SENT: dict[str, float] = {}  # wall-clock time of the noisy tenant's first and last request
RUN: dict[str, float] = {}


@events.test_start.add_listener
def _started(**_: Any) -> None:
    RUN["start"] = time.time()


@events.request.add_listener
def _record(
    name: str,
    response_time: float,
    response: Any = None,
    start_time: float | None = None,
    exception: Any = None,
    **_: Any,
) -> None:
    status = getattr(response, "status_code", None) or 0
    STATUSES[name][str(status) if status else "exc"] += 1
    FAILURES[name] += exception is not None
    at = (start_time or time.time()) - RUN.get("start", time.time())
    SAMPLES[name].append((round(at, 3), float(response_time)))


@events.test_stop.add_listener
def _dump(**_: Any) -> None:
    if not RAW_PATH:
        return
    raw = {
        "statuses": {name: dict(c) for name, c in STATUSES.items()},
        "failures": dict(FAILURES),
        "samples": SAMPLES,
        "noisy_first_sent": NOISY_SENT.get("first"),
        "noisy_last_sent": NOISY_SENT.get("last"),
    }
    with open(RAW_PATH, "wb") as fh:
        fh.write(orjson.dumps(raw))
    # Locust rewrites its *_stats.csv once a second and not again at the end: give its writer
    # one more turn now that every user has stopped, so the CSV holds the final figures.
    gevent.sleep(1.5)


def _body(model: str, *, chat: bool, stream: bool) -> dict[str, Any]:
    prompt = random.choice(PROMPTS)
    body: dict[str, Any] = {"model": model, "temperature": 0, "max_tokens": MAX_TOKENS}
    if chat:
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    if stream:
        body["stream"] = True
    return body


def _text(resp: Any) -> str:
    return (resp.content or b"").decode("utf-8", "replace")


def check_answer(status: int, text: str, *, chat: bool, stream: bool, model: str) -> str | None:
    """Why a 200 answer is not a complete, well-formed completion (None when it is)."""
    if status != 200:
        return f"status {status}: {text[:200]}"
    if stream:
        if not text.rstrip().endswith("data: [DONE]"):
            return f"the stream did not end with data: [DONE]: {text[-200:]!r}"
        events_ = [
            orjson.loads(line[6:])
            for line in text.splitlines()
            if line.startswith("data: ") and line != "data: [DONE]"
        ]
        if any("error" in e for e in events_):
            return f"an error event in the stream: {text[-300:]!r}"
        if chat:
            parts = [c.get("delta", {}).get("content") or "" for e in events_ for c in e["choices"]]
        else:
            parts = [c.get("text") or "" for e in events_ for c in e["choices"]]
        served = {e.get("model") for e in events_}
        if not "".join(parts).strip():
            return "the stream carried no text"
    else:
        doc = orjson.loads(text)
        choice = doc["choices"][0]
        content = choice["message"]["content"] if chat else choice["text"]
        if not content or not content.strip():
            return "the answer carried no text"
        served = {doc.get("model")}
    if model != "default" and served != {model}:
        return f"asked for tune {model}, served by {sorted(map(str, served))}"
    return None


class TenantUser(FastHttpUser):
    abstract = True
    host = HOST
    network_timeout = 30.0
    connection_timeout = 10.0
    tenant = ""
    tunes: tuple[str, ...] = ()

    def on_start(self) -> None:
        self.headers = {
            "Authorization": f"Bearer {KEYS[self.tenant]}",
            "Content-Type": "application/json",
        }

    def generate(self, *, chat: bool, stream: bool) -> None:
        model = random.choice(self.tunes)
        path = "/v1/chat/completions" if chat else "/v1/completions"
        kind = ("chat" if chat else "completion") + (" stream" if stream else "")
        name = f"{self.tenant} {kind}"
        self.before_send()
        with self.client.post(
            path,
            data=orjson.dumps(_body(model, chat=chat, stream=stream)),
            headers=self.headers,
            name=name,
            catch_response=True,
        ) as resp:
            self.judge(resp, chat=chat, stream=stream, model=model)

    def before_send(self) -> None:
        pass

    def judge(self, resp: Any, *, chat: bool, stream: bool, model: str) -> None:
        text = _text(resp)
        try:
            why = check_answer(resp.status_code, text, chat=chat, stream=stream, model=model)
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            why = f"malformed answer ({exc!r}): {text[:200]}"
        if why is None:
            resp.success()
        else:
            resp.failure(why)


class QuietTenant(TenantUser):
    """A well-behaved tenant: about 1.5 requests/s per user, far below its limits."""

    abstract = True
    wait_time = between(0.3, 0.9)

    @task(3)
    def chat(self) -> None:
        self.generate(chat=True, stream=False)

    @task(3)
    def chat_stream(self) -> None:
        self.generate(chat=True, stream=True)

    @task(1)
    def completion(self) -> None:
        self.generate(chat=False, stream=False)

    @task(1)
    def completion_stream(self) -> None:
        self.generate(chat=False, stream=True)


class QuietA(QuietTenant):
    fixed_count = QUIET_USERS
    tenant = "quiet-a"
    tunes = ("support", "legal", "default")


class QuietB(QuietTenant):
    fixed_count = QUIET_USERS
    tenant = "quiet-b"
    tunes = ("extract", "legal", "default")


class Noisy(TenantUser):
    """Sends at a fixed rate, ten times its requests-per-minute limit, whatever its answers take
    (an open loop: each request runs in its own greenlet, at most `NOISY_INFLIGHT` per user);
    429s are expected."""

    fixed_count = NOISY_USERS
    tenant = "noisy"
    tunes = ("support", "legal")
    concurrency = NOISY_INFLIGHT  # connections per user
    wait_time = constant_throughput(NOISY_RPS / max(1, NOISY_USERS))

    def on_start(self) -> None:
        super().on_start()
        self.inflight = gevent.pool.Pool(NOISY_INFLIGHT)

    def on_stop(self) -> None:
        self.inflight.join(timeout=15)  # the answers still coming are recorded

    def send(self, *, chat: bool, stream: bool) -> None:
        self.inflight.spawn(self.generate, chat=chat, stream=stream)  # waits only when full

    def before_send(self) -> None:
        now = time.time()
        NOISY_SENT.setdefault("first", now)
        NOISY_SENT["last"] = now

    def judge(self, resp: Any, *, chat: bool, stream: bool, model: str) -> None:
        if resp.status_code != 429:
            super().judge(resp, chat=chat, stream=stream, model=model)
            return
        text = _text(resp)
        try:
            code = orjson.loads(text)["error"]["code"]
        except (ValueError, KeyError, TypeError):
            code = None
        if code != "requests_rate_limit_exceeded":
            resp.failure(f"a 429 without the rate-limit envelope: {text[:200]}")
        elif not resp.headers.get("retry-after"):
            resp.failure("a 429 without Retry-After")
        else:
            resp.success()  # expected: the tenant is over its limit

    @task(1)
    def chat(self) -> None:
        self.send(chat=True, stream=False)

    @task(1)
    def chat_stream(self) -> None:
        self.send(chat=True, stream=True)
