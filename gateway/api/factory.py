"""The app from `TUNEGATE_*` variables: what each uvicorn worker process builds."""

from __future__ import annotations

from fastapi import FastAPI

from gateway.api.app import create_app
from gateway.settings import Settings

__all__ = ["app_from_env"]


def app_from_env() -> FastAPI:
    return create_app(Settings(), drain_on_sigterm=True, freeze_heap=True)
