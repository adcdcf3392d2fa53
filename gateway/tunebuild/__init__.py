"""Build the demo base model and demo LoRA tunes locally and deterministically.

Only the build command imports this package (``python -m gateway.tunebuild.demo``); the server
never does. Heavy dependencies (torch, transformers, peft, tokenizers) are imported by the
training modules, not here.
"""

from gateway.tunebuild.data import Demonstration, DemonstrationError, Message, load_demonstrations

__all__ = ["Demonstration", "DemonstrationError", "Message", "load_demonstrations"]
