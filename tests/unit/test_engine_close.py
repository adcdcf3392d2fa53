"""An engine stream the caller leaves early closes the generator under it at once: vLLM's own
`generate` (which aborts the request when closed) for the in-process engine. Left to the
garbage collector, the event loop's finalizer hook would close it later, in a task of its own."""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

from gateway.engine import EngineRequest
from gateway.engine.vllm_engine import VLLMEngine
from gateway.settings import EngineSettings


class FakeLLM:
    """Stands in for vLLM's `AsyncLLM`: yields delta outputs, notes when it is closed."""

    errored = False

    def __init__(self, tokens: int) -> None:
        self.tokens = tokens
        self.closed: list[str] = []

    async def generate(
        self, prompt: Any, params: Any, request_id: str, **kw: Any
    ) -> AsyncIterator[Any]:
        try:
            for i in range(self.tokens):
                last = i == self.tokens - 1
                choice = SimpleNamespace(
                    text=f" w{i}", token_ids=[i], finish_reason="length" if last else None
                )
                yield SimpleNamespace(outputs=[choice], finished=last)
        finally:
            self.closed.append(request_id)


async def test_leaving_a_stream_early_closes_the_engine_generator_at_once(tmp_path):
    engine = VLLMEngine(EngineSettings(model_path=tmp_path))
    engine._llm = llm = FakeLLM(tokens=5)
    engine._ready = True
    outputs = engine.stream(EngineRequest("r1", [1, 2, 3], 5))
    first = await anext(outputs)
    assert (first.text, first.completion_tokens, first.finish_reason) == (" w0", 1, None)
    await outputs.aclose()
    assert llm.closed == ["r1"]  # before the loop ran anything else


async def test_a_finished_stream_reads_every_output(tmp_path):
    engine = VLLMEngine(EngineSettings(model_path=tmp_path))
    engine._llm = llm = FakeLLM(tokens=3)
    engine._ready = True
    outs = [o async for o in engine.stream(EngineRequest("r2", [1, 2], 3))]
    assert [(o.text, o.completion_tokens, o.prompt_tokens, o.finish_reason) for o in outs] == [
        (" w0", 1, 2, None),
        (" w1", 2, 2, None),
        (" w2", 3, 2, "length"),
    ]
    assert llm.closed == ["r2"]
