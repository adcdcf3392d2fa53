"""Freezing what start-up leaves: the collector's full collections stop walking it."""

from __future__ import annotations

import asyncio
import gc

from gateway.heap import YOUNG_THRESHOLD, freeze_startup_heap, thaw_heap


def tracked(obj: object) -> bool:
    """Whether the collector's generations (not the frozen, permanent one) hold `obj`."""
    return any(o is obj for o in gc.get_objects())


def test_freezing_moves_live_objects_out_of_the_collected_generations():
    gc.unfreeze()
    before = {"a": [1, 2]}  # a container, tracked by the collector
    assert tracked(before)
    try:
        frozen = freeze_startup_heap()
        assert frozen == gc.get_freeze_count() > 1000  # this process' modules, at least
        assert not tracked(before)
        after = {"b": [3]}  # made after the freeze: collected as usual
        assert tracked(after)
    finally:
        thaw_heap()
    assert tracked(before)


def test_the_young_generation_is_collected_less_often_until_the_heap_thaws():
    own = gc.get_threshold()
    assert own[0] < YOUNG_THRESHOLD
    try:
        freeze_startup_heap()
        assert gc.get_threshold() == (YOUNG_THRESHOLD, *own[1:])
        freeze_startup_heap()  # again: the collector's own thresholds are still what comes back
        thaw_heap()
        assert gc.get_threshold() == own
    finally:
        gc.unfreeze()
        gc.set_threshold(*own)


async def test_the_serving_app_freezes_once_its_engine_has_started(tmp_path):
    from gateway.api import create_app
    from tests.api.conftest import EchoEngine, write_config

    settings = write_config(tmp_path)
    for freeze, expect in ((False, False), (True, True)):
        gc.unfreeze()
        app = create_app(settings, engine=EchoEngine(), freeze_heap=freeze)
        try:
            async with app.router.lifespan_context(app):
                for _ in range(100):  # the engine starts in the background
                    if gc.get_freeze_count():
                        break
                    await asyncio.sleep(0.02)
                assert bool(gc.get_freeze_count()) is expect
            assert gc.get_freeze_count() == 0  # thawed at shutdown, for the clean-up at exit
        finally:
            gc.unfreeze()
