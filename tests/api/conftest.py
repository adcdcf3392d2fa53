"""In-process API tests: the real app and pipeline with a test double for the engine."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import httpx
import pytest

from gateway.api import create_app
from gateway.auth import hash_key
from gateway.engine import Adapter, EngineRequest, EngineStats, Output
from gateway.settings import EngineSettings, Settings

KEYS = {"acme": "tg-test-acme", "narrow": "tg-test-narrow"}
ADMIN = "admin-test-token"


class EchoEngine:
    """Engine double: 'tokens' are words; the answer names the adapter and echoes the prompt."""

    answers_whole = False

    def __init__(self, max_model_len: int = 64) -> None:
        self.ready = True
        self.max_model_len = max_model_len
        self.vocab_size = 1000
        self.max_token_chars = 32
        self.loaded: dict[int, Adapter] = {}
        self.requests: list[EngineRequest] = []
        self.fail_load = False
        self.script: list[str] | None = None  # deltas to answer with, instead of the echo
        self.on_evict = lambda adapter: None
        self.on_load = lambda adapter, seconds: None
        self.running = 0

    async def start(self, warm_adapters: Sequence[Adapter] = ()) -> None:
        self.ready = True

    async def stop(self) -> None:
        self.ready = False

    async def tokenize_chat(self, messages: list[dict[str, str]]) -> list[int]:
        return await self.tokenize(" ".join(f"{m['role']}: {m['content']}" for m in messages))

    async def tokenize(self, text: str) -> list[int]:
        return [len(w) for w in text.split()]

    async def stream(self, request: EngineRequest) -> AsyncIterator[Output]:
        self.requests.append(request)
        name = request.adapter.name.split("@")[0] if request.adapter else "base"
        words = [f"[{name}]", "answer", "with", "several", "words", "here"][: request.max_tokens]
        if self.script is not None:
            for i, delta in enumerate(self.script, 1):
                await asyncio.sleep(0)
                last = i == len(self.script)
                yield Output(delta, i, len(request.prompt_token_ids), "stop" if last else None)
            return
        for i, word in enumerate(words, 1):
            await asyncio.sleep(0)
            finish = None
            if i == len(words):
                finish = "length" if len(words) == request.max_tokens else "stop"
            yield Output((" " if i > 1 else "") + word, i, len(request.prompt_token_ids), finish)

    def hold(self) -> asyncio.Event:
        """Make every request wait until the returned event is set (requests in flight)."""
        gate = asyncio.Event()
        original = self.stream

        async def held(request: EngineRequest) -> AsyncIterator[Output]:
            await gate.wait()
            async for out in original(request):
                yield out

        self.stream = held  # type: ignore[method-assign]
        return gate

    async def load_adapter(self, adapter: Adapter) -> bool:
        if self.fail_load:
            from gateway.errors import InvalidRequestError

            raise InvalidRequestError("cannot load", param="name")
        new = adapter.adapter_id not in self.loaded
        self.loaded[adapter.adapter_id] = adapter
        if new:
            self.on_load(adapter, 0.001)
        return new

    async def unload_adapter(self, adapter: Adapter) -> None:
        self.loaded.pop(adapter.adapter_id, None)

    async def loaded_adapters(self) -> set[int]:
        return set(self.loaded)

    async def health(self) -> bool:
        return self.ready

    def stats(self) -> EngineStats:
        return EngineStats(running=self.running, adapters_resident=len(self.loaded))


def write_config(root: Path) -> Settings:
    tunes = root / "tunes"
    for name in ("support", "legal", "extract"):
        (tunes / name / "adapter").mkdir(parents=True)
        (tunes / name / "tune.yaml").write_text(
            f"name: {name}\nbase_model: test-base\nadapter_path: adapter\nrank: 8\n"
        )
    policies = root / "policies"
    policies.mkdir()
    (policies / "tenants.yaml").write_text(
        "tenants:\n"
        f"  - name: acme\n    keys: [{{id: acme-1, sha256: {hash_key(KEYS['acme'])}}}]\n"
        "    tunes: [support, legal, extract]\n    default_tune: legal\n"
        f"  - name: narrow\n    keys: [{{id: narrow-1, sha256: {hash_key(KEYS['narrow'])}}}]\n"
        "    tunes: [support]\n"
    )
    return Settings(
        audit_dir=root / "audit",
        tunes_dir=tunes,
        policies_dir=policies,
        admin_token=ADMIN,
        max_body_bytes=4096,
        engine=EngineSettings(served_model_name="test-base", max_model_len=64),
    )


@pytest.fixture
def engine() -> EchoEngine:
    return EchoEngine()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return write_config(tmp_path)


@pytest.fixture
async def client(settings: Settings, engine: EchoEngine) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, engine=engine)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://gw") as c,
    ):
        yield c


def auth(tenant: str = "acme") -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[tenant]}"}
