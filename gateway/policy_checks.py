"""The policy stage: allowed parameters and input rules, checked before the engine sees a thing."""

from __future__ import annotations

from collections.abc import Iterable

from gateway.errors import InvalidRequestError
from gateway.policy import KNOWN_PARAMETERS, Tenant

__all__ = ["PolicyViolation", "check_request"]


class PolicyViolation(InvalidRequestError):
    """A tenant rule refused the request; the message names the rule, never the matched text."""


def check_request(
    tenant: Tenant, fields_set: Iterable[str], texts: list[str], field: str = "messages"
) -> None:
    """Raise `PolicyViolation` when the request breaks one of the tenant's rules."""
    if tenant.allowed_parameters is not None:
        for name in sorted(set(fields_set) & KNOWN_PARAMETERS):
            if name not in tenant.allowed_parameters:
                raise PolicyViolation(
                    f"The parameter `{name}` is not allowed for this tenant.",
                    param=name,
                    code="parameter_not_allowed",
                )
    if tenant.max_messages is not None and len(texts) > tenant.max_messages:
        raise PolicyViolation(
            f"Too many messages: {len(texts)} (this tenant's limit is {tenant.max_messages}).",
            param=field,
            code="too_many_messages",
        )
    for rule_id, pattern in tenant.deny_patterns:
        for text in texts:
            if pattern.search(text):
                raise PolicyViolation(
                    f"The input was refused by policy rule `{rule_id}`.",
                    param=field,
                    code="input_rule_violation",
                )
