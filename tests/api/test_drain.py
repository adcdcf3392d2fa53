"""Graceful shutdown: the first SIGTERM drains (503 `shutting_down` for new work, /readyz 503,
requests in flight finish), then uvicorn's own handler gets the signal."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from types import SimpleNamespace

import httpx

from gateway.api import create_app
from gateway.api.drain import SigtermDrain
from tests.api.conftest import EchoEngine, auth

BODY = {"model": "support", "messages": [{"role": "user", "content": "hello there"}]}


async def test_while_draining_new_work_is_refused_and_readyz_says_so(settings):
    engine = EchoEngine()
    gate = engine.hold()
    app = create_app(settings, engine=engine)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://gw", timeout=30) as c,
    ):
        gw = app.state.gateway
        held = asyncio.create_task(c.post("/v1/chat/completions", json=BODY, headers=auth()))
        while gw.active < 1:
            await asyncio.sleep(0.01)
        gw.draining = True
        r = await c.post("/v1/completions", json={"model": "support", "prompt": "hi"},
                         headers=auth())  # fmt: skip
        assert r.status_code == 503 and r.json()["error"]["code"] == "shutting_down"
        assert r.headers["retry-after"]
        ready = await c.get("/readyz")
        assert ready.status_code == 503 and ready.json()["error"]["code"] == "shutting_down"
        gate.set()
        assert (await held).status_code == 200  # the request in flight finished
        assert gw.entered == 0


async def test_sigterm_waits_for_requests_in_flight_then_passes_the_signal_on():
    passed: list[int] = []
    original = signal.signal(signal.SIGTERM, lambda sig, frame: passed.append(sig))
    gw = SimpleNamespace(draining=False, entered=1)
    drain = SigtermDrain(gw, timeout_s=10)
    try:
        assert drain.install()
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.sleep(0.2)
        assert gw.draining and passed == []  # one request still in flight: waiting
        gw.entered = 0
        for _ in range(40):
            if passed:
                break
            await asyncio.sleep(0.05)
        assert passed == [signal.SIGTERM]  # uvicorn's handler (here: the previous one) got it
        drain.uninstall()
        assert signal.getsignal(signal.SIGTERM) is not drain._on_signal
    finally:
        signal.signal(signal.SIGTERM, original)


async def test_a_second_sigterm_does_not_wait():
    passed: list[int] = []
    original = signal.signal(signal.SIGTERM, lambda sig, frame: passed.append(sig))
    gw = SimpleNamespace(draining=False, entered=5)
    drain = SigtermDrain(gw, timeout_s=60)
    try:
        drain.install()
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.sleep(0.1)
        assert passed == []
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.sleep(0.1)
        assert passed == [signal.SIGTERM]
    finally:
        drain.uninstall()
        signal.signal(signal.SIGTERM, original)


async def test_the_drain_gives_up_after_its_timeout(caplog):
    caplog.set_level(logging.WARNING, logger="gateway.api.drain")
    passed: list[int] = []
    original = signal.signal(signal.SIGTERM, lambda sig, frame: passed.append(sig))
    gw = SimpleNamespace(draining=False, entered=2)  # two requests that never finish
    drain = SigtermDrain(gw, timeout_s=0.3)
    try:
        drain.install()
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.sleep(0.1)
        assert passed == []  # still waiting
        for _ in range(40):
            if passed:
                break
            await asyncio.sleep(0.05)
        assert passed == [signal.SIGTERM]  # stopped anyway, with the two still in flight
        assert "drain timeout: 2 request(s) still in flight" in caplog.text
    finally:
        drain.uninstall()
        signal.signal(signal.SIGTERM, original)
