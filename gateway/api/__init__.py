"""HTTP layer (the only package besides the app factory that imports FastAPI)."""

from gateway.api.app import create_app

__all__ = ["create_app"]
