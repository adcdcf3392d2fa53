"""`tunegate tunes build SPEC` on the demo base: deterministic, held-out split, manifest entry."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from gateway.catalogue import TuneCatalogue
from gateway.tune_validation import BaseModelInfo, validate_adapter

ROOT = Path(__file__).resolve().parents[2]


def spec(tmp_path: Path, demo_build: Path, version: str, data: str = "demos.jsonl") -> Path:
    path = tmp_path / f"spec-{version}.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "helpdesk",
                "version": version,
                "description": "test",
                "owner": "ops",
                "data": data,
                "held_out": 0.2,
                "base_path": str(demo_build / "base"),
                "tunes_dir": str(tmp_path / "tunes"),
                "train": {"steps": 20, "seed": 5},
            }
        )
    )
    return path


def build(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "tunes", "build", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_build_two_versions_then_validate(demo_build, tmp_path):
    lines = (ROOT / "tunes/demo/data/support.jsonl").read_text().splitlines()[:40]
    (tmp_path / "demos.jsonl").write_text("\n".join(lines) + "\n")
    for version in ("1", "2"):
        r = build(spec(tmp_path, demo_build, version))
        assert r.returncode == 0, r.stderr
        assert f"built version {version}" in r.stdout and "32 demonstrations" in r.stdout
    catalogue = TuneCatalogue.load(tmp_path / "tunes", "tunegate-demo-base")
    v1, v2 = catalogue.versions("helpdesk")
    assert (v1.status, v2.status) == ("live", "draft")
    base = BaseModelInfo(demo_build / "base", "tunegate-demo-base", 16)
    for tune in (v1, v2):
        validate_adapter(tune, base)  # includes the recorded adapter_sha256
    assert v1.adapter_sha256 == v2.adapter_sha256  # same data and seed: the same weights
    manifest = yaml.safe_load((tmp_path / "tunes/helpdesk/tune.yaml").read_text())
    prov = manifest["versions"][1]["provenance"]
    assert prov["held_out"] == 8 and prov["trained_on"] == 32 and len(prov["data_sha256"]) == 64
    held = (tmp_path / "tunes/helpdesk/versions/2/held_out.jsonl").read_text().splitlines()
    assert len(held) == 8
    r = build(spec(tmp_path, demo_build, "2"))
    assert r.returncode == 2 and "already exists" in r.stderr


def test_bad_data_is_reported_with_line_numbers(demo_build, tmp_path):
    (tmp_path / "bad.jsonl").write_text(
        '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}]}\n'
        "{not json\n"
        '{"messages": [{"role": "wizard", "content": "x"}, {"role": "assistant", "content": "y"}]}\n'
        '{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": ""}]}\n'
    )
    r = build(spec(tmp_path, demo_build, "1", data="bad.jsonl"))
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    for line in (":2:", ":3:", ":4:"):
        assert line in r.stderr, r.stderr
