"""Post-processing of answers: format profiles and output safety, whole-text and streaming."""

from gateway.postprocess.formatting import FormatProfile, Formatter
from gateway.postprocess.pipeline import OutputPipeline, Step

__all__ = ["FormatProfile", "Formatter", "OutputPipeline", "Step"]
