"""Settings, tune catalogue and policy loading: valid files load, bad files say where and why."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.catalogue import TuneCatalogue, adapter_id
from gateway.policy import load_policy
from gateway.settings import Settings
from gateway.yamlconfig import ConfigError

ROOT = Path(__file__).resolve().parents[2]
HASH = "a" * 64


def tune(root: Path, name: str, body: str) -> Path:
    (root / name).mkdir(parents=True, exist_ok=True)
    path = root / name / "tune.yaml"
    path.write_text(body)
    return path


def test_settings_defaults_env_and_kwargs(monkeypatch):
    s = Settings()
    assert (s.host, s.port, s.engine.max_model_len) == ("127.0.0.1", 8000, 512)
    monkeypatch.setenv("TUNEGATE_PORT", "9001")
    monkeypatch.setenv("TUNEGATE_ENGINE__MAX_LORAS", "7")
    monkeypatch.setenv("TUNEGATE_ADMIN_TOKEN", "s3cret")
    s = Settings()
    assert s.port == 9001 and s.engine.max_loras == 7
    assert "s3cret" not in repr(s) and s.admin_token.get_secret_value() == "s3cret"
    assert Settings(port=1234).port == 1234


def test_settings_reject_bad_values(monkeypatch):
    monkeypatch.setenv("TUNEGATE_PORT", "not-a-port")
    with pytest.raises(ValueError, match="port"):
        Settings()


def test_repository_catalogue_and_policies_are_valid():
    catalogue = TuneCatalogue.load(ROOT / "tunes", "tunegate-demo-base")
    assert catalogue.names() == ["extract", "legal", "support"]
    tenants = load_policy(ROOT / "policies", set(catalogue.names()))
    assert tenants.tenants["demo"].default_tune == "support"


def test_catalogue_loads_and_resolves_paths(tmp_path):
    tune(tmp_path, "alpha", "name: alpha\nbase_model: b\nadapter_path: w\nrank: 8\n")
    cat = TuneCatalogue.load(tmp_path, "b")
    t = cat.get("alpha")
    assert t is not None and t.adapter_path == (tmp_path / "alpha" / "w").resolve()
    assert t.adapter_id == adapter_id("alpha") > 0


def test_adapter_ids_are_stable():
    assert adapter_id("support") == adapter_id("support") != adapter_id("legal")
    assert adapter_id("support") == 562430730  # the same in every process and release


@pytest.mark.parametrize(
    "body,field,line,fragment",
    [
        ("name: alpha\nbase_model: b\nadapter_path: w\nrank: zero\n", "rank", 4, "integer"),
        ("name: alpha\nbase_model: b\nrank: 8\n", None, 1, "give `adapter_path`"),
        ("name: Bad Name\nbase_model: b\nadapter_path: w\nrank: 8\n", "name", 1, "pattern"),
        (
            "name: alpha\nbase_model: b\nadapter_path: w\nrank: 8\nextra: 1\n",
            "extra",
            5,
            "not permitted",
        ),
        ("name: beta\nbase_model: b\nadapter_path: w\nrank: 8\n", "name", None, "folder"),
        (
            "name: alpha\nbase_model: other\nadapter_path: w\nrank: 8\n",
            "base_model",
            None,
            "serves",
        ),
        ("name: [alpha\n", None, 2, "invalid YAML"),
    ],
)
def test_bad_manifests_name_file_field_and_line(tmp_path, body, field, line, fragment):
    path = tune(tmp_path, "alpha", body)
    with pytest.raises(ConfigError) as info:
        TuneCatalogue.load(tmp_path, "b")
    err = info.value
    assert err.path == path and err.field == field and fragment in str(err)
    if line is not None:
        assert err.line == line
        assert f"{path}:{line}" in str(err)


def policy(tmp_path: Path, body: str) -> Path:
    (tmp_path / "tenants.yaml").write_text(body)
    return tmp_path


@pytest.mark.parametrize(
    "body,field,fragment",
    [
        (
            f"tenants:\n  - name: a\n    keys: [{{id: k, sha256: {HASH}}}]\n    tunes: [x]\n"
            "    default_tune: y\n",
            "tenants.0",
            "default_tune",
        ),
        (
            "tenants:\n  - name: a\n    keys: [{id: k, sha256: plaintext-key}]\n",
            "tenants.0.keys.0.sha256",
            "pattern",
        ),
        (
            f"tenants:\n  - name: a\n    keys: [{{id: k, sha256: {HASH}}}]\n"
            f"  - name: b\n    keys: [{{id: j, sha256: {HASH}}}]\n",
            None,
            "reuses a key hash",
        ),
        ("tenants:\n  - name: a\n    tunes: [ghost]\n", "tenants.0.tunes.0", "not in the tune"),
        ("tenants:\n  - name: a\n  - name: a\n", None, "declared twice"),
    ],
)
def test_bad_policies_are_refused_clearly(tmp_path, body, field, fragment):
    root = policy(tmp_path, body)
    with pytest.raises(ConfigError) as info:
        load_policy(root, {"x"})
    assert info.value.field == field and fragment in str(info.value)
    assert str(root / "tenants.yaml") in str(info.value)


def test_bad_policy_error_has_line(tmp_path):
    root = policy(
        tmp_path, "tenants:\n  - name: a\n    keys:\n      - id: k\n        sha256: nope\n"
    )
    with pytest.raises(ConfigError) as info:
        load_policy(root)
    assert info.value.line == 5


def test_missing_policy_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read file"):
        load_policy(tmp_path)
