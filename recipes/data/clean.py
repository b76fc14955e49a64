"""Cleaning: normalise text, redact PII, drop bad rows, with a count of each reason.

Each step is a pure function over strings or examples; :func:`clean_examples`
runs them in order and fills a :class:`CleanReport`. A row is dropped for the
first reason that applies, so the counts add up to the rows removed.

PII is found with regular expressions written here (credit-card candidates
are Luhn-checked, IPs checked with :mod:`ipaddress`) rather than with
Presidio: Presidio needs a spaCy language model, which cannot be downloaded
on the machines this runs on and weighs more than the rest of the pipeline.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from recipes.data.load import Example
from recipes.schema import CleanSpec

SAMPLES_PER_REASON = 3

# --- text normalisation -----------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b\u200e\u200f\u2028\u2029\ufeff]")
_SPACES = re.compile(r"[ \t\f\v\u00a0\u3000]+")
_TRAILING = re.compile(r" +\n")
_BLANK_LINES = re.compile(r"\n{3,}")


def strip_control_chars(text: str) -> str:
    """Drop control characters (keeping newlines and tabs) and invisible marks."""
    return _CONTROL.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))


def normalize_whitespace(text: str) -> str:
    """NFC; runs of spaces/tabs become one space; no spaces before newlines; trimmed ends."""
    text = unicodedata.normalize("NFC", text)
    text = _SPACES.sub(" ", text)
    text = _TRAILING.sub("\n", text)
    text = _BLANK_LINES.sub("\n\n", text)
    return text.strip()


# --- PII --------------------------------------------------------------------------------

_EMAIL = re.compile(
    r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
_SSN = re.compile(r"(?<![\d-])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\d-])")
_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")
_IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
_PHONE = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)|\d{3})[ .-]?\d{3}[ .-]?\d{4}(?!\w)"
    r"|(?<![\w+])\+\d{1,3}(?:[ .-]?\d{2,4}){2,5}(?!\w)"
)

_DIGIT = re.compile(r"\d")

PII_LABELS = {
    "email": "[EMAIL]", "credit_card": "[CREDIT_CARD]", "ssn": "[SSN]",
    "ip_address": "[IP_ADDRESS]", "phone": "[PHONE]",
}


def luhn_ok(digits: str) -> bool:
    """The Luhn checksum every payment card number satisfies."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _is_card(match: str) -> bool:
    digits = re.sub(r"\D", "", match)
    return 13 <= len(digits) <= 19 and luhn_ok(digits)


def _is_ipv4(match: str) -> bool:
    try:
        ipaddress.IPv4Address(match)
    except ValueError:
        return False
    return True


def _is_ipv6(match: str) -> bool:
    if match.count(":") < 2 or not re.search(r"[0-9A-Fa-f]", match):
        return False
    try:
        ipaddress.IPv6Address(match)
    except ValueError:
        return False
    return True


# Order matters: cards before phones (a card holds phone-like runs), SSNs before phones.
_DETECTORS: tuple[tuple[str, re.Pattern[str], Callable[[str], bool] | None], ...] = (
    ("email", _EMAIL, None),
    ("credit_card", _CARD, _is_card),
    ("ssn", _SSN, None),
    ("ip_address", _IPV4, _is_ipv4),
    ("ip_address", _IPV6, _is_ipv6),
    ("phone", _PHONE, None),
)


def redact_pii(text: str) -> tuple[str, Counter[str]]:
    """``text`` with emails, cards, SSNs, IPs and phones replaced by labels, and their counts."""
    counts: Counter[str] = Counter()
    # Every pattern needs '@', ':' or a digit; most text has none, and this check is cheap.
    if "@" not in text and ":" not in text and not _DIGIT.search(text):
        return text, counts
    for kind, pattern, check in _DETECTORS:
        def sub(m: re.Match[str], kind: str = kind,
                check: Callable[[str], bool] | None = check) -> str:
            if check is not None and not check(m.group(0)):
                return m.group(0)
            counts[kind] += 1
            return PII_LABELS[kind]

        text = pattern.sub(sub, text)
    return text, counts


# --- row quality ------------------------------------------------------------------------

_MIN_WORDS = 6


def repetition_ratio(text: str) -> float:
    """Share of the text covered by its most repeated word n-gram (n = 1..3), in [0, 1].

    Short texts score 0: a three-word answer cannot be judged degenerate.
    Texts of few but long words are measured on characters instead.
    """
    words = text.split()
    units: list[str] = words
    if len(words) < _MIN_WORDS:
        if len(text) < 32:
            return 0.0
        units = list(text)
    best = 0.0
    for n in (1, 2, 3):
        if len(units) < 2 * n:
            break
        grams = Counter(tuple(units[i:i + n]) for i in range(len(units) - n + 1))
        gram, count = grams.most_common(1)[0]
        if count > 1 and not (units is not words and gram == (" ",) * n):
            best = max(best, min(1.0, count * n / len(units)))
    return best


def content_id(ex: Example) -> str:
    """sha256 of what an example says (not where it came from): its id and dedupe key."""
    canonical = json.dumps(ex.content(), sort_keys=True, ensure_ascii=False,
                           separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def answers(ex: Example) -> list[str]:
    """The texts a model learns to produce from this example."""
    if ex.kind == "chat":
        return [m["content"] for m in ex.messages if m["role"] == "assistant"]
    if ex.kind == "preference":
        return [ex.chosen, ex.rejected]
    return [ex.text]


def prompts(ex: Example) -> list[str]:
    return [m["content"] for m in ex.messages if m["role"] == "user"]


# --- the cleaner ------------------------------------------------------------------------


@dataclass
class CleanReport:
    """What cleaning removed (by reason) and changed, with a few rows named per reason."""

    rows_in: int = 0
    removed: Counter[str] = field(default_factory=Counter)
    modified: Counter[str] = field(default_factory=Counter)
    pii: Counter[str] = field(default_factory=Counter)
    samples: dict[str, list[str]] = field(default_factory=dict)

    def drop(self, ex: Example, reason: str) -> None:
        self.removed[reason] += 1
        seen = self.samples.setdefault(reason, [])
        if len(seen) < SAMPLES_PER_REASON:
            seen.append(ex.where)

    def to_json(self) -> dict[str, Any]:
        return {
            "rows_in": self.rows_in,
            "removed": dict(sorted(self.removed.items())),
            "removed_total": sum(self.removed.values()),
            "modified": dict(sorted(self.modified.items())),
            "pii_redacted": dict(sorted(self.pii.items())),
            "samples": self.samples,
        }


def _map_strings(ex: Example, fn: Callable[[str], str]) -> Example:
    return replace(
        ex,
        messages=[{"role": m["role"], "content": fn(m["content"])} for m in ex.messages],
        chosen=fn(ex.chosen), rejected=fn(ex.rejected), text=fn(ex.text),
    )


def clean_text(ex: Example, spec: CleanSpec, report: CleanReport) -> Example:
    """Normalise and redact every string of an example, counting what changed."""
    changed: set[str] = set()
    found: Counter[str] = Counter()

    def fix(text: str) -> str:
        if spec.strip_control_chars:
            new = strip_control_chars(text)
            if new != text:
                changed.add("control_chars")
            text = new
        if spec.normalize_whitespace:
            new = normalize_whitespace(text)
            if new != text:
                changed.add("whitespace")
            text = new
        if spec.redact_pii:
            text, counts = redact_pii(text)
            found.update(counts)
        return text

    ex = _map_strings(ex, fix)
    for what in changed:
        report.modified[what] += 1
    if found:
        report.modified["pii_redacted"] += 1
        report.pii.update(found)
    return ex


def drop_reason(ex: Example, spec: CleanSpec) -> str | None:
    """Why this (already normalised) example should not be trained on, or None."""
    outs = answers(ex)
    if any(not a.strip() for a in outs):
        return "empty_output"
    if any(len(a.strip()) < spec.min_output_chars for a in outs):
        return "short_output"
    if any(not p.strip() for p in prompts(ex)):
        return "empty_prompt"
    if any(repetition_ratio(a) > spec.max_repetition_ratio for a in outs):
        return "repetition"
    return None


def clean_examples(examples: Iterable[Example], spec: CleanSpec, report: CleanReport) -> list[
    Example
]:
    """Normalise, redact, drop bad rows and exact duplicates (first occurrence kept)."""
    seen: set[str] = set()
    kept: list[Example] = []
    for ex in examples:
        report.rows_in += 1
        ex = clean_text(ex, spec, report)
        reason = drop_reason(ex, spec)
        if reason is not None:
            report.drop(ex, reason)
            continue
        if spec.dedupe:
            key = content_id(ex)
            if key in seen:
                report.drop(ex, "duplicate")
                continue
            seen.add(key)
        kept.append(ex)
    return kept
