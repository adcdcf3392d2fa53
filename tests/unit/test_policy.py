"""Policy inheritance and validation."""

from __future__ import annotations

import pytest

from gateway.policy import load_policy
from gateway.yamlconfig import ConfigError

H1, H2 = "a1" * 32, "b2" * 32


def load(tmp_path, text, tunes=None):
    (tmp_path / "tenants.yaml").write_text(text)
    return load_policy(tmp_path, tunes)


def test_tenants_inherit_and_override_defaults(tmp_path):
    policy = load(
        tmp_path,
        f"""
default:
  limits: {{requests_per_minute: 100, tokens_per_minute: 1000, max_tokens: 64}}
  allowed_parameters: [temperature, max_tokens]
  input_rules:
    max_messages: 5
    deny_patterns: [{{id: d1, pattern: foo}}]
tenants:
  - name: a
    keys: [{{id: a1, sha256: {H1}}}]
    limits: {{requests_per_minute: 7}}
    allowed_parameters: [temperature]
    input_rules:
      max_messages: 2
      deny_patterns: [{{id: t1, pattern: bar}}]
  - name: b
    keys: [{{id: b1, sha256: {H2}}}]
""",
    )
    a, b = policy.tenants["a"], policy.tenants["b"]
    assert (a.limits.requests_per_minute, a.limits.tokens_per_minute, a.limits.max_tokens) == (
        7,
        1000,
        64,
    )
    assert a.allowed_parameters == {"temperature"} and a.max_messages == 2
    assert [rule for rule, _ in a.deny_patterns] == ["d1", "t1"]
    assert b.limits.requests_per_minute == 100 and b.max_messages == 5
    assert b.allowed_parameters == {"temperature", "max_tokens"}
    assert [rule for rule, _ in b.deny_patterns] == ["d1"]
    assert policy.keys[H1].tenant == "a" and policy.keys[H2].key_id == "b1"


def test_no_default_means_no_limits(tmp_path):
    t = load(tmp_path, "tenants:\n  - name: a\n").tenants["a"]
    assert t.limits.requests_per_minute is None and t.allowed_parameters is None


@pytest.mark.parametrize(
    "text,field,line",
    [
        ("default:\n  allowed_parameters: [temperature, magic]\n", "default.allowed_parameters", 2),
        (
            "tenants:\n  - name: a\n    input_rules:\n"
            "      deny_patterns: [{id: x, pattern: '(['}]\n",
            "tenants.0.input_rules.deny_patterns.0.pattern",
            4,
        ),
        (
            "tenants:\n  - name: a\n    limits: {requests_per_minute: 0}\n",
            "tenants.0.limits.requests_per_minute",
            3,
        ),
        ("tenants:\n  - name: a\n    limits: {rpm: 5}\n", "tenants.0.limits.rpm", 3),
    ],
)
def test_bad_policy_names_field_and_line(tmp_path, text, field, line):
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    assert info.value.field == field and info.value.line == line


def test_unknown_tune_has_line(tmp_path):
    with pytest.raises(ConfigError) as info:
        load(tmp_path, "tenants:\n  - name: a\n    tunes: [x,\n      ghost]\n", {"x"})
    assert info.value.field == "tenants.0.tunes.1" and info.value.line == 4
