"""Adapter checks before a load, on the real demo adapters and broken copies of them."""

from __future__ import annotations

import json
import shutil

import pytest

from gateway.catalogue import Tune, adapter_id
from gateway.tune_validation import AdapterInvalidError, BaseModelInfo, validate_adapter


@pytest.fixture
def base(demo_build):
    return BaseModelInfo(demo_build / "base", "tunegate-demo-base", max_rank=16)


def tune_at(path, rank=8, sha=None):
    return Tune("t", "", "tunegate-demo-base", path, rank, adapter_id("t"), None, sha)


@pytest.fixture
def adapter(demo_build, tmp_path):
    dest = tmp_path / "adapter"
    shutil.copytree(demo_build / "adapters" / "support", dest)
    return dest


def edit(path, **changes):
    cfg = json.loads((path / "adapter_config.json").read_text())
    cfg.update(changes)
    (path / "adapter_config.json").write_text(json.dumps(cfg))


def test_demo_adapters_pass(demo_build, base):
    for name in ("support", "legal", "extract"):
        validate_adapter(tune_at(demo_build / "adapters" / name), base)


def test_matching_hash_passes(adapter, base):
    import hashlib

    sha = hashlib.sha256((adapter / "adapter_model.safetensors").read_bytes()).hexdigest()
    validate_adapter(tune_at(adapter, sha=sha), base)


@pytest.mark.parametrize(
    "breakage,fragment",
    [
        (lambda p: edit(p, base_model_name_or_path="/elsewhere/model"), "another base model"),
        (lambda p: edit(p, r=64), "above the engine's limit"),
        (lambda p: edit(p, r=4), "differs from the manifest"),
        (lambda p: edit(p, target_modules=["q_proj", "conv_proj"]), "conv_proj"),
        (lambda p: edit(p, peft_type="PREFIX_TUNING"), "peft"),
        (lambda p: (p / "adapter_model.safetensors").unlink(), "weights are missing"),
        (lambda p: (p / "adapter_config.json").write_text("{not json"), "not valid JSON"),
        (lambda p: (p / "adapter_config.json").unlink(), "no adapter_config.json"),
    ],
)
def test_each_failure_has_a_clear_message(adapter, base, breakage, fragment):
    breakage(adapter)
    with pytest.raises(AdapterInvalidError) as info:
        validate_adapter(tune_at(adapter), base)
    assert fragment in info.value.message and info.value.status == 400
    assert str(adapter) not in info.value.message  # no server paths in client-facing text


def test_hash_mismatch(adapter, base):
    with pytest.raises(AdapterInvalidError, match="do not match"):
        validate_adapter(tune_at(adapter, sha="0" * 64), base)


def test_base_weights_hash(adapter, base):
    from dataclasses import replace

    validate_adapter(replace(tune_at(adapter), base_model_sha256=base.sha256), base)
    with pytest.raises(AdapterInvalidError, match="different base weights"):
        validate_adapter(replace(tune_at(adapter), base_model_sha256="1" * 64), base)
