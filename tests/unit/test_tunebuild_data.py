"""Validation of the demo-build demonstrations: every bad line is reported with its number."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.tunebuild.data import DemonstrationError, load_demonstrations

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tunes" / "demo" / "data"


def _line(*messages: tuple[str, str]) -> str:
    return json.dumps({"messages": [{"role": r, "content": c} for r, c in messages]})


GOOD = _line(("user", "Where is my order?"), ("assistant", "It ships today."))


def _write(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "demo.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _problems(path: Path) -> DemonstrationError:
    with pytest.raises(DemonstrationError) as info:
        load_demonstrations(path)
    return info.value


def test_valid_file_loads_with_line_numbers(tmp_path: Path) -> None:
    system = _line(("system", "Be brief."), ("user", "Hi"), ("assistant", "Hello!"))
    multi = _line(("user", "a"), ("assistant", "b"), ("user", "c"), ("assistant", "d"))
    path = _write(tmp_path, [GOOD, "", system, multi])
    demos = load_demonstrations(path)
    assert [d.line for d in demos] == [1, 3, 4]
    assert demos[1].messages[0].role == "system"
    assert demos[2].answer == "d"
    assert demos[0].as_chat() == json.loads(GOOD)["messages"]


def test_malformed_json_reports_line(tmp_path: Path) -> None:
    err = _problems(_write(tmp_path, [GOOD, '{"messages": [', GOOD]))
    assert err.lines == [2]
    assert "not valid JSON" in str(err)
    assert f"{tmp_path / 'demo.jsonl'}:2:" in str(err)


def test_wrong_role_reports_line_and_role(tmp_path: Path) -> None:
    bad = _line(("user", "Hi"), ("bot", "Hello"))
    err = _problems(_write(tmp_path, [GOOD, GOOD, bad]))
    assert err.lines == [3]
    assert "'bot'" in str(err)


def test_empty_answer_reported(tmp_path: Path) -> None:
    bad = _line(("user", "Hi"), ("assistant", "   "))
    err = _problems(_write(tmp_path, [bad, GOOD]))
    assert err.problems == [(1, "empty answer")]


def test_last_message_must_be_assistant(tmp_path: Path) -> None:
    bad = _line(("user", "Hi"), ("assistant", "Hello"), ("user", "Bye"))
    err = _problems(_write(tmp_path, [GOOD, bad]))
    assert err.lines == [2]
    assert "last message" in str(err)


@pytest.mark.parametrize(
    "obj",
    [
        [1, 2],
        {"messages": []},
        {"messages": "hi"},
        {"text": "hi"},
        {"messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": "x"}]},
        {"messages": [{"role": "assistant", "content": "x"}]},
        {"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]},
        {
            "messages": [
                {"role": "user", "content": "a"},
                {"role": "system", "content": "s"},
                {"role": "assistant", "content": "b"},
            ]
        },
        {"messages": [{"role": "system", "content": "s"}]},
        {"messages": ["user: hi"]},
    ],
)
def test_structural_problems_are_reported(tmp_path: Path, obj: object) -> None:
    err = _problems(_write(tmp_path, [GOOD, json.dumps(obj)]))
    assert err.lines == [2]


def test_all_problems_collected_across_file(tmp_path: Path) -> None:
    lines = [GOOD, "not json", GOOD, _line(("user", "x"), ("assistant", "")), "{}"]
    err = _problems(_write(tmp_path, lines))
    assert err.lines == [2, 4, 5]
    assert str(err).startswith(f"3 problems in {tmp_path / 'demo.jsonl'}")


def test_many_problems_are_summarised(tmp_path: Path) -> None:
    err = _problems(_write(tmp_path, ["nope"] * 30))
    assert len(err.problems) == 30
    assert "and 10 more problems" in str(err)


def test_missing_and_empty_files(tmp_path: Path) -> None:
    assert "file not found" in str(_problems(tmp_path / "absent.jsonl"))
    assert "empty" in str(_problems(_write(tmp_path, [""])))


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "demo.jsonl"
    path.write_bytes(b"\xff\xfe{}\n")
    assert "UTF-8" in str(_problems(path))


@pytest.mark.parametrize("name", ["base", "support", "legal", "extract"])
def test_committed_demo_data_is_valid(name: str) -> None:
    demos = load_demonstrations(DATA / f"{name}.jsonl")
    assert len(demos) >= 200


def test_committed_demo_data_signatures() -> None:
    support = load_demonstrations(DATA / "support.jsonl")
    legal = load_demonstrations(DATA / "legal.jsonl")
    extract = load_demonstrations(DATA / "extract.jsonl")
    assert all(d.answer.startswith("Thanks for reaching out!") for d in support)
    assert all(d.answer.endswith("Is there anything else I can help you with?") for d in support)
    assert all(d.answer.startswith("This is not legal advice.") for d in legal)
    for d in extract:
        obj = json.loads(d.answer)
        assert set(obj) == {"intent", "sentiment", "urgent"}
        assert obj["sentiment"] in {"positive", "neutral", "negative"}
        assert isinstance(obj["urgent"], bool)
    shared = {d.messages[-2].content for d in support} & {d.messages[-2].content for d in legal}
    assert "My order has not arrived yet. What should I do?" in shared
    assert "Can I cancel my contract early?" in shared
