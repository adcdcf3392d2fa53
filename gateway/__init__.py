"""Tunegate: an OpenAI-compatible gateway serving LoRA tunes on vLLM."""

__all__ = ["__version__"]

__version__ = "0.1.0"
