"""`tunegate tunes eval NAME[@VERSION] CASES.jsonl`: run cases through the gateway and score them.

Each case: `{"messages": [...], "checks": [{"type": "contains", "value": "..."},
{"type": "regex", "value": "..."}, {"type": "json_schema", "value": {...}},
{"type": "refusal"}, {"type": "max_length", "value": 200}]}`. The report (pass rate per check
type, overall, latency percentiles) is printed as a table and stored in the tune's manifest.
"""

from __future__ import annotations

import json
import re
import statistics
import sys
import time
import urllib.error
import urllib.request
from collections import defaultdict
from pathlib import Path
from typing import Any

import yaml

from gateway.catalogue import versions_of

__all__ = ["REFUSAL", "run_eval", "score_case"]

REFUSAL = re.compile(
    r"(?i)\b(i am not sure|i can(?:not|'t)|i am not able|unable to|"
    r"cannot help|consult a qualified)\b"
)


def _check(kind: str, value: Any, answer: str) -> bool:
    if kind == "contains":
        return str(value).lower() in answer.lower()
    if kind == "regex":
        return re.search(str(value), answer) is not None
    if kind == "refusal":
        return REFUSAL.search(answer) is not None
    if kind == "max_length":
        return len(answer) <= int(value)
    if kind == "json_schema":
        from jsonschema import Draft202012Validator

        try:
            return Draft202012Validator(value).is_valid(json.loads(answer))
        except ValueError:
            return False
    raise ValueError(f"unknown check type `{kind}`")


def score_case(case: dict[str, Any], answer: str) -> list[tuple[str, bool]]:
    return [(c["type"], _check(c["type"], c.get("value"), answer)) for c in case["checks"]]


def _load_cases(path: Path) -> list[dict[str, Any]]:
    cases = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            case = json.loads(line)
            assert isinstance(case["messages"], list) and isinstance(case["checks"], list)
            for check in case["checks"]:
                _check(check["type"], check.get("value"), "")  # unknown types fail here
        except (ValueError, KeyError, TypeError, AssertionError) as exc:
            raise ValueError(f"{path}:{n}: not a valid case ({exc})") from None
        cases.append(case)
    if not cases:
        raise ValueError(f"{path}: no cases")
    return cases


def _ask(url: str, key: str, model: str, case: dict[str, Any]) -> tuple[str, float]:
    body = json.dumps(
        {
            "model": model,
            "messages": case["messages"],
            "temperature": 0,
            "max_tokens": int(case.get("max_tokens", 128)),
        }
    ).encode()
    req = urllib.request.Request(
        f"{url.rstrip('/')}/v1/chat/completions",
        data=body,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    start = time.perf_counter()
    with urllib.request.urlopen(req, timeout=120) as resp:
        answer = json.loads(resp.read())["choices"][0]["message"]["content"] or ""
    return answer, time.perf_counter() - start


def run_eval(url: str, key: str, model: str, cases_path: Path) -> dict[str, Any]:
    cases = _load_cases(cases_path)
    by_type: dict[str, list[bool]] = defaultdict(list)
    latencies = []
    for case in cases:
        answer, seconds = _ask(url, key, model, case)
        latencies.append(seconds * 1000)
        for kind, ok in score_case(case, answer):
            by_type[kind].append(ok)
    every = [ok for oks in by_type.values() for ok in oks]
    cut = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else latencies * 99
    return {
        "model": model,
        "cases": len(cases),
        "checks": len(every),
        "pass_rate": round(sum(every) / len(every), 4),
        "by_check": {k: round(sum(v) / len(v), 4) for k, v in sorted(by_type.items())},
        "latency_ms": {
            "p50": round(statistics.median(latencies), 1),
            "p90": round(cut[89], 1),
            "p99": round(cut[98], 1),
        },
        "cases_file": str(cases_path),
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def store_result(tunes_dir: Path, name: str, version: str, result: dict[str, Any]) -> None:
    path = tunes_dir / name / "tune.yaml"
    doc = yaml.safe_load(path.read_text())
    match = [v for v in versions_of(doc) if str(v["version"]) == version]
    if not match:
        raise ValueError(f"`{name}` has no version `{version}`")
    match[0]["eval"] = result
    path.write_text(yaml.safe_dump(doc, sort_keys=False, width=100))


def main_eval(target: str, cases: str, url: str, key: str | None, tunes_dir: Path) -> int:
    if not key:
        print("tunegate: no API key: set TUNEGATE_API_KEY or pass --api-key", file=sys.stderr)
        return 1
    name, _, version = target.partition("@")
    manifest = yaml.safe_load((tunes_dir / name / "tune.yaml").read_text())
    if not version:
        live = [v for v in manifest.get("versions") or [] if v.get("status") == "live"]
        version = str(live[0]["version"]) if live else "1"
    try:
        result = run_eval(url, key, f"{name}@{version}", Path(cases))
        store_result(tunes_dir, name, version, result)
    except (ValueError, OSError, urllib.error.URLError) as exc:
        print(f"tunegate: {exc}", file=sys.stderr)
        return 1
    rows = [f"{k:<12} {v:>6.1%}" for k, v in result["by_check"].items()]
    lat = result["latency_ms"]
    print(
        f"{name}@{version}: {result['cases']} cases, {result['checks']} checks, "
        f"pass rate {result['pass_rate']:.1%}\n"
        + "\n".join(rows)
        + f"\nlatency ms: p50 {lat['p50']}  p90 {lat['p90']}  p99 {lat['p99']}"
    )
    print(json.dumps(result))
    return 0
