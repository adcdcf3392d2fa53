"""Evaluation checks and case files."""

from __future__ import annotations

import pytest

from gateway.tune_eval import _load_cases, score_case


@pytest.mark.parametrize(
    "check,answer,ok",
    [
        ({"type": "contains", "value": "Legal Advice"}, "This is not legal advice.", True),
        ({"type": "contains", "value": "refund"}, "No.", False),
        ({"type": "regex", "value": r"^\{.*\}$"}, '{"a": 1}', True),
        ({"type": "json_schema", "value": {"type": "object", "required": ["a"]}}, '{"a": 1}', True),
        (
            {"type": "json_schema", "value": {"type": "object", "required": ["a"]}},
            '{"b": 1}',
            False,
        ),
        ({"type": "json_schema", "value": {"type": "object"}}, "not json", False),
        ({"type": "refusal"}, "I am not sure about that.", True),
        ({"type": "refusal"}, "Paris.", False),
        ({"type": "max_length", "value": 5}, "short", True),
        ({"type": "max_length", "value": 4}, "short", False),
    ],
)
def test_checks(check, answer, ok):
    assert score_case({"checks": [check]}, answer) == [(check["type"], ok)]


def test_bad_case_files_name_the_line(tmp_path):
    path = tmp_path / "cases.jsonl"
    path.write_text(
        '{"messages": [], "checks": [{"type": "contains", "value": "x"}]}\n'
        '{"messages": [], "checks": [{"type": "vibes"}]}\n'
    )
    with pytest.raises(ValueError, match=r"cases.jsonl:2"):
        _load_cases(path)
    path.write_text("")
    with pytest.raises(ValueError, match="no cases"):
        _load_cases(path)


def test_eval_result_lands_on_the_version_of_a_one_adapter_manifest(tmp_path):
    import yaml

    from gateway.catalogue import TuneCatalogue
    from gateway.tune_eval import store_result

    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "tune.yaml").write_text(
        "name: t\nbase_model: b\nadapter_path: w\nrank: 8\nadapter_sha256: " + "a" * 64 + "\n"
    )
    store_result(tmp_path, "t", "1", {"pass_rate": 0.9})
    doc = yaml.safe_load((tmp_path / "t" / "tune.yaml").read_text())
    assert doc["versions"] == [
        {
            "version": "1",
            "adapter_path": "w",
            "rank": 8,
            "status": "live",
            "adapter_sha256": "a" * 64,
            "eval": {"pass_rate": 0.9},
        }
    ]
    assert TuneCatalogue.load(tmp_path, "b").get("t").eval_score == 0.9
    with pytest.raises(ValueError, match="no version `2`"):
        store_result(tmp_path, "t", "2", {})
