"""The admission and release scripts of the requests of one event-loop turn, sent to Redis as one
pipeline.

Every request runs two scripts, its admission and its release. Through redis-py each call is a
round trip with its own command, connection checkout and reply parsing: about 55 µs of the
gateway's CPU in process. Sent together in one pipeline, four cost about 22 µs each and eight
about 15 (`loadtests/README.md`). A loaded gateway finishes and admits several requests in each
turn of its event loop, so `ScriptBatch.call` queues the call and the turn's calls go out
together at the start of the next turn (a request waits no longer than that turn for it); alone,
a call goes out as before, one command in its pipeline.

Each call still gets its own answer or error. The batch as a whole is bounded by the store's
timeout: past it, or when Redis fails, every call in it is answered `StoreUnavailable`. A script
Redis no longer holds (a restart, `SCRIPT FLUSH`) is loaded again and only the calls it refused
run again, so nothing runs twice. A caller that stops waiting does not stop its call: it runs,
and the limiter gives back what an admission it no longer wanted granted.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.exceptions import NoScriptError, RedisError

from gateway.store.types import StoreUnavailable

__all__ = ["ScriptBatch"]

_Call = tuple[Any, list[Any], list[Any], "asyncio.Future[Any]"]  # script, keys, args, answer


class ScriptBatch:
    def __init__(self, redis: Any, timeout_s: float) -> None:
        self._r = redis
        self.timeout_s = timeout_s
        self._pending: list[_Call] = []
        self._sending: set[asyncio.Task[None]] = set()

    def call(self, script: Any, keys: list[Any], args: list[Any]) -> asyncio.Future[Any]:
        """Queue one script call; its future resolves with the script's answer."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Any] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)
        self._pending.append((script, keys, args, answer))
        return answer

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._sending.add(task)  # held until done: the loop keeps only a weak reference
        task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[_Call]) -> None:
        try:
            async with asyncio.timeout(self.timeout_s):
                results = await self._run(batch)
        except (RedisError, OSError, TimeoutError) as exc:
            _fail(batch, StoreUnavailable(type(exc).__name__))
            return
        except BaseException as exc:  # cancelled (the loop closing) or a bug: none waits forever
            _fail(batch, StoreUnavailable(type(exc).__name__))
            raise
        for (_, _, _, answer), result in zip(batch, results, strict=True):
            if answer.done():
                continue  # the caller stopped waiting
            if isinstance(result, Exception):
                answer.set_exception(StoreUnavailable(type(result).__name__))
            else:
                answer.set_result(result)

    async def _run(self, batch: list[_Call]) -> list[Any]:
        results = await self._pipeline(batch)
        refused = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
        if refused:  # Redis lost the scripts: load them, run again what never ran
            for script in {id(batch[i][0]): batch[i][0] for i in refused}.values():
                script.sha = await self._r.script_load(script.script)
            again = await self._pipeline([batch[i] for i in refused])
            for i, result in zip(refused, again, strict=True):
                results[i] = result
        return results

    async def _pipeline(self, batch: list[_Call]) -> list[Any]:
        pipe = self._r.pipeline(transaction=False)
        for script, keys, args, _ in batch:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        return list(await pipe.execute(raise_on_error=False))


def _fail(batch: list[_Call], exc: StoreUnavailable) -> None:
    for _, _, _, answer in batch:
        if not answer.done():
            answer.set_exception(exc)
