"""The rule rewards of ``training.grpo.rewards``: pure functions of a completion's text.

Each rule scores one completion in [0, 1]; trl's GRPOTrainer sums the rewards with their
weights (``GRPOConfig.reward_weights``) and normalises them within each prompt's group.
A reward model's score is not here: it is a model (:mod:`recipes.training.grpo`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from recipes.schema.training import ContainsReward, LengthReward, RegexReward

RuleSpec = ContainsReward | RegexReward | LengthReward
# trl's reward-function shape: prompts, completions and extra columns in, one score per
# completion out.
RewardFunc = Callable[..., list[float]]


def contains_score(text: str, needle: str) -> float:
    return 1.0 if needle in text else 0.0


def regex_score(text: str, pattern: re.Pattern[str]) -> float:
    return 1.0 if pattern.search(text) is not None else 0.0


def length_score(text: str, low: int | None, high: int | None) -> float:
    """1 inside [low, high]; outside, the ratio of the bound to the length (high / n above,
    n / low below), so every character nearer the bounds scores more and the score never
    goes flat far from them (a group of long answers still ranks its shortest first)."""
    n = len(text)
    if low is not None and n < low:
        return n / low
    if high is not None and n > high:
        return high / n
    return 1.0


def completion_text(completion: Any) -> str:
    """The text of one completion: a string, or a conversational [{role, content}] list."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Sequence):
        return "".join(str(m.get("content", "")) for m in completion if isinstance(m, dict))
    return str(completion)


def rule_score(rule: RuleSpec, text: str) -> float:
    """One rule's score of one completion's text. Pure."""
    if isinstance(rule, ContainsReward):
        return contains_score(text, rule.contains)
    if isinstance(rule, RegexReward):
        return regex_score(text, re.compile(rule.regex))
    return length_score(text, rule.length.min, rule.length.max)


def rule_name(rule: RuleSpec) -> str:
    """How trl logs the rule (``rewards/<name>/mean``)."""
    if isinstance(rule, ContainsReward):
        return "contains"
    if isinstance(rule, RegexReward):
        return "regex"
    return "length"


def rule_reward_func(rule: RuleSpec, index: int) -> RewardFunc:
    """``rule`` in trl's reward-function shape, named ``<kind>_<index>`` in the log."""
    compiled = re.compile(rule.regex) if isinstance(rule, RegexReward) else None

    def reward(prompts: list[Any], completions: list[Any], **_: Any) -> list[float]:
        texts = [completion_text(c) for c in completions]
        if compiled is not None:
            return [regex_score(t, compiled) for t in texts]
        return [rule_score(rule, t) for t in texts]

    reward.__name__ = f"{rule_name(rule)}_{index}"
    return reward
