"""A rollout's phase: a stored, typed value with every allowed transition in one table.

Lifecycle of one rollout (a candidate version against the version production serves):

1. ``pending``: recorded; nothing in the world has moved yet.
2. ``verifying``: the canary stage points at the candidate with 0% weight; the engine's
   answers to the artifact's probe prompts are compared with those recorded at training.
3. ``progressing``: at a step's canary weight, the analysis compares candidate and
   baseline; a clear pass moves to the next step, a failure counts towards the limit.
4. ``paused``: held at its weight by a person, or by a step that ended inconclusive with
   ``on_inconclusive: pause``; ``resume`` goes back to ``progressing``.
5. ``awaiting_approval``: ``approval: true`` and the next step is the last; a person's
   ``promote`` (or ``resume``) lets it continue.
6. Terminal: ``succeeded`` (production points at the candidate, canary weight 0),
   ``rolled_back`` (canary weight 0, the canary stage back to what it held before), or
   ``aborted`` (by a person, or superseded by a newer version; traffic as rolled back).
"""

from __future__ import annotations

from enum import StrEnum


class Phase(StrEnum):
    """Where a rollout is; stored, so a restarted controller resumes at the same step."""

    pending = "pending"
    verifying = "verifying"
    progressing = "progressing"
    paused = "paused"
    awaiting_approval = "awaiting_approval"
    succeeded = "succeeded"
    rolled_back = "rolled_back"
    aborted = "aborted"


TERMINAL = frozenset({Phase.succeeded, Phase.rolled_back, Phase.aborted})
# Phases in which the candidate may receive traffic (the controller keeps analysing).
SERVING = frozenset({Phase.progressing, Phase.paused, Phase.awaiting_approval})

# The one table of allowed phase changes; anything not listed is refused. A phase may
# always stay itself (a pass that moves a step, or changes nothing).
TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    Phase.pending: frozenset({Phase.verifying, Phase.rolled_back, Phase.aborted}),
    Phase.verifying: frozenset({Phase.progressing, Phase.rolled_back, Phase.aborted}),
    Phase.progressing: frozenset({
        Phase.paused, Phase.awaiting_approval, Phase.succeeded, Phase.rolled_back,
        Phase.aborted,
    }),
    Phase.paused: frozenset({Phase.progressing, Phase.succeeded, Phase.rolled_back,
                             Phase.aborted}),
    Phase.awaiting_approval: frozenset({Phase.progressing, Phase.succeeded, Phase.rolled_back,
                                        Phase.aborted}),
    Phase.succeeded: frozenset(),
    Phase.rolled_back: frozenset(),
    Phase.aborted: frozenset(),
}


class TransitionRefused(ValueError):
    """A phase change not in :data:`TRANSITIONS`."""


def check_transition(current: Phase, target: Phase) -> None:
    if target is not current and target not in TRANSITIONS[current]:
        allowed = ", ".join(sorted(p.value for p in TRANSITIONS[current])) or "none (ended)"
        raise TransitionRefused(
            f"a rollout in phase {current.value} cannot become {target.value} "
            f"(allowed: {allowed})"
        )
