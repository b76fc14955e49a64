"""Cleaning steps as pure functions: normalisation, PII, repetition, dedupe, the report."""

from __future__ import annotations

from collections import Counter

import pytest

from recipes.data.clean import (
    CleanReport,
    clean_examples,
    luhn_ok,
    normalize_whitespace,
    redact_pii,
    repetition_ratio,
    strip_control_chars,
)
from recipes.data.load import Example
from recipes.schema import CleanSpec


def chat(question: str, answer: str, row: int = 1) -> Example:
    return Example(kind="chat", source="t", file="data/t.jsonl", row=row,
                   messages=[{"role": "user", "content": question},
                             {"role": "assistant", "content": answer}])


@pytest.mark.parametrize(("text", "expected", "kinds"), [
    pytest.param("mail jane.doe+x@mail.example.co.uk now", "mail [EMAIL] now", {"email": 1},
                 id="email"),
    pytest.param("card 4111 1111 1111 1111 ok", "card [CREDIT_CARD] ok", {"credit_card": 1},
                 id="card-spaces"),
    pytest.param("card 5500-0000-0000-0004", "card [CREDIT_CARD]", {"credit_card": 1},
                 id="card-dashes"),
    pytest.param("order 4111111111111112 shipped", "order 4111111111111112 shipped", {},
                 id="not-luhn-not-a-card"),
    pytest.param("ssn 123-45-6789.", "ssn [SSN].", {"ssn": 1}, id="ssn"),
    pytest.param("ssn 000-12-3456", "ssn 000-12-3456", {}, id="invalid-ssn-area"),
    pytest.param("call (555) 867-5309 or +44 20 7946 0958", "call [PHONE] or [PHONE]",
                 {"phone": 2}, id="phones"),
    pytest.param("host 192.168.1.20, gw 10.0.0.1", "host [IP_ADDRESS], gw [IP_ADDRESS]",
                 {"ip_address": 2}, id="ipv4"),
    pytest.param("v6 2001:db8::8a2e:370:7334 up", "v6 [IP_ADDRESS] up", {"ip_address": 1},
                 id="ipv6"),
    pytest.param("version 1.2.3.999 at 10:30:00", "version 1.2.3.999 at 10:30:00", {},
                 id="not-ips"),
    pytest.param("released 2024-01-15, 3 items", "released 2024-01-15, 3 items", {},
                 id="dates-and-numbers"),
])
def test_redact_pii(text: str, expected: str, kinds: dict[str, int]) -> None:
    out, counts = redact_pii(text)
    assert out == expected
    assert counts == Counter(kinds)


def test_luhn() -> None:
    assert luhn_ok("4111111111111111") and luhn_ok("79927398713")
    assert not luhn_ok("4111111111111112")


def test_normalisation() -> None:
    assert strip_control_chars("a\x00b\u200bc\r\nd\te") == "abc\nd\te"
    assert normalize_whitespace("  a \t b  \n\n\n\nc   \n") == "a b\n\nc"
    assert normalize_whitespace("cafe\u0301") == "caf\u00e9"


@pytest.mark.parametrize(("text", "degenerate"), [
    pytest.param("ha ha ha ha ha ha ha ha", True, id="one-word"),
    pytest.param("I am fine. I am fine. I am fine. I am fine.", True, id="phrase"),
    pytest.param("a" * 40, True, id="one-char"),
    pytest.param("alpha: reset password", False, id="short-answer"),
    pytest.param("The quick brown fox jumps over the lazy dog near the river bank.", False,
                 id="prose"),
])
def test_repetition(text: str, degenerate: bool) -> None:
    assert (repetition_ratio(text) > 0.5) is degenerate


def test_clean_examples_counts_each_reason() -> None:
    rows = [
        chat("q1", "alpha: one", 1),
        chat("q1", "alpha:   one", 2),  # duplicate once whitespace is normalised
        chat("q2", "", 3),
        chat("q3", "ok", 4),
        chat("", "alpha: empty question", 5),
        chat("q4", "yes yes yes yes yes yes yes yes", 6),
        chat("mail me at a@b.io", "alpha: noted", 7),
        chat("q5\x07", "alpha: bell", 8),
    ]
    report = CleanReport()
    kept = clean_examples(rows, CleanSpec(min_output_chars=3), report)
    assert [e.row for e in kept] == [1, 7, 8]
    assert report.removed == Counter(duplicate=1, empty_output=1, short_output=1,
                                     empty_prompt=1, repetition=1)
    assert report.samples["duplicate"] == ["data/t.jsonl row 2"]
    assert report.pii == Counter(email=1)
    assert kept[1].messages[0]["content"] == "mail me at [EMAIL]"
    assert kept[2].messages[0]["content"] == "q5"
    assert report.modified["control_chars"] == 1 and report.modified["whitespace"] == 1
    assert report.to_json()["removed_total"] == 5


def test_cleaning_can_be_switched_off() -> None:
    rows = [chat("mail a@b.io", "alpha:  x", 1), chat("mail a@b.io", "alpha:  x", 2)]
    spec = CleanSpec(dedupe=False, redact_pii=False, normalize_whitespace=False)
    kept = clean_examples(rows, spec, CleanReport())
    assert len(kept) == 2 and kept[0].messages[1]["content"] == "alpha:  x"
    assert kept[0].messages[0]["content"] == "mail a@b.io"
