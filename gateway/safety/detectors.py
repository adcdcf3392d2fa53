"""Built-in detectors: bounded regexes plus pure validators (Luhn, IBAN mod-97, ...).

Every regex has a bounded maximum match length, so a stream can hold back a bounded
window.  A validator sees only the match and returns the span to report (the whole
match or a sub-span) or None; it never looks at the surrounding text.  Each built-in
also declares a *charset*: a superset of every character any atom of its regex can
consume, so no match can cross a character outside it (the stream uses that to hold
back less).

Coverage of `national_id`: US SSN written `AAA-GG-SSSS` (area not 000, 666 or 9xx,
group not 00, serial not 0000) and UK National Insurance numbers (`QQ 12 34 56 C`,
spaces optional, invalid prefixes excluded).  SSNs without dashes are not matched.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import phonenumbers

Validator = Callable[[re.Match[str]], tuple[int, int] | None]


@dataclass(frozen=True)
class Finding:
    """A span `[start, end)` of the scanned text; never carries the matched text."""

    rule_id: str
    kind: str
    start: int
    end: int
    action: str


@dataclass(frozen=True)
class Builtin:
    regex: re.Pattern[str]
    charset: str  # the inside of a [...] character class
    validate: Validator | None = None


# --- regexes -------------------------------------------------------------------------

EMAIL = re.compile(
    r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]{1,64}@"
    r"(?:[A-Za-z0-9-]{1,63}\.){1,3}[A-Za-z]{2,24}(?![A-Za-z0-9-])"
)
PHONE = re.compile(
    r"(?<![\w+])(?:\+[0-9]{1,3}[ .-]?)?(?:\([0-9]{1,4}\)[ .-]?)?"
    r"[0-9]{1,4}(?:[ .-]?[0-9]{1,4}){1,5}(?![0-9A-Za-z])"
)
CARD = re.compile(r"(?<![0-9])[0-9](?:[ -]?[0-9]){12,18}(?![0-9])")
IBAN = re.compile(
    r"(?<![A-Za-z0-9])[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?(?![A-Za-z0-9])"
)
NATIONAL_ID = re.compile(
    r"(?<![A-Za-z0-9-])(?:(?P<ssn>[0-9]{3}-[0-9]{2}-[0-9]{4})"
    r"|(?P<nino>[A-Z]{2} ?[0-9]{2} ?[0-9]{2} ?[0-9]{2} ?[A-D]))(?![A-Za-z0-9-])"
)
API_KEY = re.compile(
    r"(?<![A-Za-z0-9_-])(?:(?P<generic>(?:sk|tg)-[A-Za-z0-9_-]{20,256})"
    r"|(?:AKIA|ASIA)[0-9A-Z]{16}(?![A-Za-z0-9])"
    r"|gh[pousr]_[A-Za-z0-9]{36,251}"
    r"|github_pat_[A-Za-z0-9_]{22,255}"
    r"|xox[baprs]-[A-Za-z0-9-]{10,250}"
    r"|AIza[0-9A-Za-z_-]{35})"
)
PRIVATE_KEY = re.compile(
    r"-----BEGIN (?:(?:RSA|EC|DSA|OPENSSH|ENCRYPTED|PGP) )?PRIVATE KEY(?: BLOCK)?-----"
)
JWT = re.compile(
    r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{5,300}\.[A-Za-z0-9_-]{5,1200}\.[A-Za-z0-9_-]{0,540}"
)

_INJECTION_PHRASES = (
    r"ignore (?:all |any |the |your )?(?:of )?(?:the |your )?"
    r"(?:previous|prior|above|earlier|preceding|system) "
    r"(?:instructions?|prompts?|directions|rules|messages|guidelines)",
    r"disregard (?:all |any |the |your )?(?:previous |prior |above |earlier )?"
    r"(?:instructions?|system prompt|system message|prompts?|rules|guidelines)",
    r"forget (?:all |everything |your |the )?(?:previous |prior |above |earlier )?"
    r"(?:instructions?|rules|guidelines)",
    r"you are now (?:DAN|in developer mode|an? unrestricted|jailbroken|unfiltered)",
    r"(?:enable|enter|activate|switch to) (?:developer|DAN|god|jailbreak) mode",
    r"(?:reveal|show|print|repeat|output|display|leak) (?:me )?(?:your|the) "
    r"(?:full |entire |hidden |original |initial )?"
    r"(?:system prompt|system message|hidden instructions|initial instructions)",
    r"do anything now",
    r"(?:override|bypass) (?:your |the |all )?(?:safety |content )?"
    r"(?:filters?|guidelines|restrictions|safeguards)",
    r"pretend (?:that )?(?:you have|there are) no (?:rules|restrictions|guidelines|filters)",
    r"act as (?:an? )?(?:unrestricted|unfiltered|jailbroken) (?:AI|assistant|model)",
)
PROMPT_INJECTION = re.compile(
    r"(?<!\w)(?:" + "|".join(p.replace(" ", r"\s{1,8}") for p in _INJECTION_PHRASES) + r")(?!\w)",
    re.IGNORECASE,
)

# --- validators ----------------------------------------------------------------------

_SEP = re.compile(r"[ .-]+")


def _pieces(text: str, min_digits: int, max_digits: int) -> list[tuple[int, int]]:
    """Sub-spans made of whole separator-delimited groups, longest first."""
    cuts = [0] + [m.end() for m in _SEP.finditer(text)]
    ends = [m.start() for m in _SEP.finditer(text)] + [len(text)]
    spans = [
        (s, e)
        for s in cuts
        for e in ends
        if s < e and min_digits <= sum(c.isdigit() for c in text[s:e]) <= max_digits
    ]
    return sorted(spans, key=lambda se: (se[0] - se[1], se[0]))


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card(m: re.Match[str]) -> tuple[int, int] | None:
    text = m.group()
    for s, e in _pieces(text, 13, 19):
        digits = re.sub(r"[^0-9]", "", text[s:e])
        if len(set(digits)) > 1 and luhn_ok(digits):
            return m.start() + s, m.start() + e
    return None


IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AT": 20, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29,
    "CH": 21, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "EE": 20, "ES": 24, "FI": 18,
    "FO": 18, "FR": 27, "GB": 22, "GI": 23, "GL": 18, "GR": 27, "HR": 21, "HU": 28,
    "IE": 22, "IL": 23, "IS": 26, "IT": 27, "KW": 30, "KZ": 20, "LB": 28, "LI": 21,
    "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MT": 31, "NL": 18, "NO": 15, "PK": 24,
    "PL": 28, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24, "SE": 24, "SI": 19,
    "SK": 24, "SM": 27, "TN": 24, "TR": 26, "UA": 29,
}  # fmt: skip


def iban_ok(iban: str) -> bool:
    """ISO 13616 check: country length (when known) and mod-97 == 1."""
    expected = IBAN_LENGTHS.get(iban[:2])
    if not 15 <= len(iban) <= 34 or (expected is not None and len(iban) != expected):
        return False
    rotated = iban[4:] + iban[:4]
    return int("".join(str(int(c, 36)) for c in rotated)) % 97 == 1


def _iban(m: re.Match[str]) -> tuple[int, int] | None:
    text = m.group()
    expected = IBAN_LENGTHS.get(text[:2])
    end, count = len(text), 0
    if expected is not None:  # trim trailing groups beyond the country's length
        for i, ch in enumerate(text):
            count += ch != " "
            if count == expected:
                end = i + 1
                break
        if end < len(text) and text[end] != " ":
            return None
    ok = iban_ok(text[:end].replace(" ", ""))
    return (m.start(), m.start() + end) if ok else None


_NINO_FIRST = set("ABCEGHJKLMNOPRSTWXYZ")
_NINO_SECOND = set("ABCEGHJKLMNPRSTWXYZ")
_NINO_BAD = {"BG", "GB", "NK", "KN", "TN", "NT", "ZZ"}


def _national_id(m: re.Match[str]) -> tuple[int, int] | None:
    if m.group("ssn"):
        area, group, serial = m.group("ssn").split("-")
        bad = area in ("000", "666") or area[0] == "9" or group == "00" or serial == "0000"
        return None if bad else m.span()
    prefix = m.group("nino")[:2]
    ok = prefix[0] in _NINO_FIRST and prefix[1] in _NINO_SECOND and prefix not in _NINO_BAD
    return m.span() if ok else None


def _api_key(m: re.Match[str]) -> tuple[int, int] | None:
    generic = m.group("generic")
    if generic is None:
        return m.span()
    body = generic[3:]  # an sk-/tg- key has digits and letters; "sk-learn-is-..." does not
    ok = any(c.isdigit() for c in body) and any(c.isalpha() for c in body)
    return m.span() if ok else None


def phone_ok(candidate: str) -> bool:
    region = None if candidate.startswith("+") else "US"
    try:
        number = phonenumbers.parse(candidate, region)
    except phonenumbers.NumberParseException:
        return False
    return bool(phonenumbers.is_valid_number(number))


def _phone(m: re.Match[str]) -> tuple[int, int] | None:
    text = m.group()
    for s, e in _pieces(text, 7, 15)[:12]:
        if phone_ok(text[s:e]):
            return m.start() + s, m.start() + e
    return None


BUILTINS: dict[str, Builtin] = {
    "email": Builtin(EMAIL, r"A-Za-z0-9._%+@-"),
    "phone": Builtin(PHONE, r"0-9 .()+-", _phone),
    "payment_card": Builtin(CARD, r"0-9 -", _card),
    "iban": Builtin(IBAN, r"A-Z0-9 ", _iban),
    "national_id": Builtin(NATIONAL_ID, r"A-Z0-9 -", _national_id),
    "api_key": Builtin(API_KEY, r"A-Za-z0-9_-", _api_key),
    "private_key": Builtin(PRIVATE_KEY, r"A-Z -"),
    "jwt": Builtin(JWT, r"A-Za-z0-9_.-"),
    "prompt_injection": Builtin(PROMPT_INJECTION, r"\w\s"),
}


def terms_regex(terms: list[str]) -> tuple[re.Pattern[str], str]:
    """Whole-word, case-insensitive alternation of the terms, and its charset."""
    words = sorted({" ".join(t.split()) for t in terms if t.strip()}, key=len, reverse=True)
    alts = [r"\s{1,8}".join(re.escape(w) for w in term.split(" ")) for term in words]
    regex = re.compile(rf"(?<!\w)(?:{'|'.join(alts)})(?!\w)", re.IGNORECASE)
    variants = {c for t in words for ch in t for c in (ch, ch.lower(), ch.upper())}
    extra = sorted(c for c in variants if len(c) == 1 and not re.match(r"[\w\s]", c))
    return regex, r"\w\s" + "".join(re.escape(c) for c in extra)
