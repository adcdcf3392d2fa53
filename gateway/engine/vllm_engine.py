"""`VLLMEngine`: the in-process vLLM V1 async engine, serving tunes as LoRA adapters."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from gateway.engine.engine_processes import detached_spawns
from gateway.engine.process_priority import lower_children
from gateway.engine.prompts import PromptRenderer, RendersPrompts
from gateway.engine.types import Adapter, EngineRequest, EngineStats, Output
from gateway.errors import EngineUnavailableError, InvalidRequestError
from gateway.settings import EngineSettings

__all__ = ["AdapterLoadError", "VLLMEngine"]

log = logging.getLogger(__name__)


class AdapterLoadError(InvalidRequestError):
    default_code = "adapter_load_failed"


class VLLMEngine(RendersPrompts):
    """Owns one `AsyncLLM`. Only this module imports vLLM."""

    answers_whole = False  # outputs come step by step from the scheduler at no extra cost

    def __init__(self, settings: EngineSettings) -> None:
        self.settings = settings
        self._llm: Any = None
        self._prompts: PromptRenderer | None = None
        self._ready = False
        self._died = False
        self._locks: dict[str, asyncio.Lock] = {}
        # Adapters on the engine, least recently used first; kept within `max_cpu_loras` by
        # evicting the least recently used one explicitly (so it is seen and counted).
        self._loaded: OrderedDict[int, Adapter] = OrderedDict()
        self._scheduler: dict[str, float] = {}  # the last numbers from the engine's scheduler
        self.on_evict: Callable[[Adapter], None] = lambda adapter: None
        self.on_load: Callable[[Adapter, float], None] = lambda adapter, seconds: None

    @property
    def ready(self) -> bool:
        return self._ready and self._llm is not None and not self._llm.errored

    @property
    def dead(self) -> bool:
        """Started once, and its engine-core process has died since."""
        return self._llm is not None and (self._llm.errored or self._died)

    @property
    def max_model_len(self) -> int:
        return self.settings.max_model_len

    async def start(self, warm_adapters: Sequence[Adapter] = ()) -> None:
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        s = self.settings
        self._died = False
        self._loaded.clear()  # a new engine holds no adapters yet
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(max(1, round(s.kv_cache_gib))))
        args = AsyncEngineArgs(
            model=str(s.model_path),
            served_model_name=[s.served_model_name],
            dtype=s.dtype,
            max_model_len=s.max_model_len,
            enable_lora=True,
            max_loras=s.max_loras,
            max_cpu_loras=s.max_cpu_loras,
            max_lora_rank=s.max_lora_rank,
            max_num_seqs=s.max_num_seqs,
            gpu_memory_utilization=s.gpu_memory_utilization,
            enforce_eager=s.enforce_eager,
            seed=s.seed,
            disable_log_stats=True,  # no periodic log lines; our stat logger still gets stats
        )
        self._prompts = await asyncio.to_thread(PromptRenderer.from_pretrained, s.model_path)
        # Building the engine blocks (it spawns the engine-core process and waits for it). The
        # engine's processes answer to the gateway, not to signals sent to its process group.
        with detached_spawns():
            self._llm = await asyncio.to_thread(
                AsyncLLM.from_engine_args, args, stat_loggers=[_stat_logger(self._scheduler)]
            )
        lower_children(s.process_nice)  # its processes exist now; the event loop comes first
        await self._warm(warm_adapters)
        self._ready = True
        log.info("engine ready", extra={"adapters": [a.name for a in warm_adapters]})

    async def _warm(self, adapters: Sequence[Adapter]) -> None:
        probe = self.encode("Hello")
        await self._drain(EngineRequest("warmup-base", probe, max_tokens=2, temperature=0.0))
        for adapter in adapters[: self.settings.max_cpu_loras]:
            await self.load_adapter(adapter)
            req = EngineRequest(f"warmup-{adapter.name}", probe, 2, 0.0, adapter=adapter)
            await self._drain(req)

    async def _drain(self, request: EngineRequest) -> None:
        async for _ in self._generate(request):
            pass

    async def stop(self) -> None:
        self._ready = False
        self._close_prompts()
        llm, self._llm = self._llm, None
        if llm is None:
            return
        # vLLM's shutdown stops the engine core before it cancels its output handler, a task on
        # this event loop; run from a thread, the handler could see the core gone first and log
        # an `EngineDeadError` traceback for a shutdown the gateway asked for. It goes first.
        handler = getattr(llm, "output_handler", None)
        if handler is not None and not handler.done():
            handler.cancel()
            await asyncio.wait([handler])
        await asyncio.to_thread(llm.shutdown)

    def stream(self, request: EngineRequest) -> AsyncIterator[Output]:
        if not self.ready:
            raise EngineUnavailableError(
                "The engine is not ready; try again shortly.", headers={"Retry-After": "5"}
            )
        return self._generate(request)

    async def _generate(self, request: EngineRequest) -> AsyncIterator[Output]:
        from vllm.exceptions import VLLMClientError
        from vllm.inputs.engine import tokens_input
        from vllm.sampling_params import (
            RequestOutputKind,
            SamplingParams,
            StructuredOutputsParams,
        )
        from vllm.v1.engine.exceptions import EngineDeadError

        params = SamplingParams(
            max_tokens=request.max_tokens,
            temperature=request.temperature,
            top_p=request.top_p,
            stop=list(request.stop) or None,
            seed=request.seed,
            presence_penalty=request.presence_penalty,
            frequency_penalty=request.frequency_penalty,
            logit_bias=request.logit_bias,
            output_kind=RequestOutputKind.DELTA,
            structured_outputs=(
                StructuredOutputsParams(**request.structured) if request.structured else None
            ),
        )
        lora = self._lora_request(request.adapter) if request.adapter else None
        prompt = tokens_input(request.prompt_token_ids, cache_salt=request.cache_salt)
        completion_tokens = 0
        prompt_tokens = len(request.prompt_token_ids)
        try:
            outputs = self._llm.generate(prompt, params, request.request_id, lora_request=lora)
            try:
                async for out in outputs:
                    choice = out.outputs[0]
                    completion_tokens += len(choice.token_ids)
                    finish = choice.finish_reason if out.finished else None
                    if finish not in (None, "stop", "length"):
                        raise EngineUnavailableError(f"The engine ended the request ({finish}).")
                    yield Output(choice.text, completion_tokens, prompt_tokens, finish)
            finally:
                await outputs.aclose()  # a caller that stopped early: vLLM aborts it now
        except VLLMClientError as exc:
            raise InvalidRequestError(str(exc)) from None
        except EngineDeadError:
            self._ready = False
            self._died = True
            raise EngineUnavailableError(
                "The engine has stopped; it is being restarted.", headers={"Retry-After": "10"}
            ) from None

    @staticmethod
    def _lora_request(adapter: Adapter) -> Any:
        from vllm.lora.request import LoRARequest

        return LoRARequest(adapter.name, adapter.adapter_id, str(adapter.path))

    async def load_adapter(self, adapter: Adapter) -> bool:
        if adapter.adapter_id in self._loaded:
            self._loaded.move_to_end(adapter.adapter_id)
            return False
        lock = self._locks.setdefault(adapter.name, asyncio.Lock())
        async with lock:
            if adapter.adapter_id in self._loaded:
                return False
            while len(self._loaded) >= self.settings.max_cpu_loras:
                _, oldest = self._loaded.popitem(last=False)
                await self._llm.remove_lora(oldest.adapter_id)
                self.on_evict(oldest)
            if not (adapter.path / "adapter_config.json").is_file():
                raise AdapterLoadError(
                    f"Tune `{adapter.name}` has no adapter at its catalogued path.", param="name"
                )
            started = time.perf_counter()
            try:
                await self._llm.add_lora(self._lora_request(adapter))
            except Exception as exc:
                raise AdapterLoadError(
                    f"Tune `{adapter.name}` could not be loaded: {type(exc).__name__}.",
                    param="name",
                ) from None
            self._loaded[adapter.adapter_id] = adapter
            self.on_load(adapter, time.perf_counter() - started)
            return True

    async def unload_adapter(self, adapter: Adapter) -> None:
        async with self._locks.setdefault(adapter.name, asyncio.Lock()):
            if self._loaded.pop(adapter.adapter_id, None) is not None:
                await self._llm.remove_lora(adapter.adapter_id)

    def stats(self) -> EngineStats:
        sched = self._scheduler
        return EngineStats(
            running=int(sched.get("running", 0)),
            waiting=int(sched.get("waiting", 0)),
            kv_cache_usage=float(sched.get("kv_cache_usage", 0.0)),
            adapters_resident=len(self._loaded),
        )

    async def loaded_adapters(self) -> set[int]:
        if self._llm is None:
            return set()
        return set(await self._llm.list_loras())

    async def health(self) -> bool:
        if self._llm is None:
            return False
        try:
            await self._llm.check_health()
        except Exception:
            return False
        return True


def _stat_logger(into: dict[str, float]) -> Any:
    """A vLLM stat-logger factory that keeps the scheduler's latest numbers in `into`."""
    from vllm.v1.metrics.loggers import StatLoggerBase

    class SchedulerSnapshot(StatLoggerBase):
        def __init__(self, vllm_config: Any, engine_index: int = 0) -> None:
            pass

        def record(
            self,
            scheduler_stats: Any,
            iteration_stats: Any,
            mm_cache_stats: Any = None,
            engine_idx: int = 0,
        ) -> None:
            if scheduler_stats is not None:
                into["running"] = scheduler_stats.num_running_reqs
                into["waiting"] = scheduler_stats.num_waiting_reqs
                into["kv_cache_usage"] = scheduler_stats.kv_cache_usage

        def log_engine_initialized(self) -> None:
            pass

    return SchedulerSnapshot
