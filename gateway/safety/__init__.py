"""Safety scanning: PII / secret / deny-list / prompt-injection detection for prompts
and completions, over whole texts (`scan`) and streams (`StreamScanner`).

Pure Python, no model downloads.  Typical use::

    rules = compile_rules(SafetyConfig.model_validate(cfg).output)
    result = scan(text, rules)            # or: StreamScanner(rules).feed(delta) ...
"""

from gateway.safety.detectors import Finding
from gateway.safety.rules import (
    Action,
    RuleConfig,
    RuleKind,
    RuleSet,
    SafetyConfig,
    compile_rules,
)
from gateway.safety.scanner import ScanResult, scan
from gateway.safety.stream import StreamScanner, StreamStep

__all__ = [
    "Action",
    "Finding",
    "RuleConfig",
    "RuleKind",
    "RuleSet",
    "SafetyConfig",
    "ScanResult",
    "StreamScanner",
    "StreamStep",
    "compile_rules",
    "scan",
]
