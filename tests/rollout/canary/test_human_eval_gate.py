"""The canary controller and a recipe's deploy.human_eval: a rollout ends in production, so
it does not start without a passing human evaluation, and one whose final promotion the
registry refuses (a newer, failing evaluation) is aborted with the reason.

Stepped one pass at a time against a real registry, traffic recorded in the controller's
real gateway source (RequestLog), the clock a fake one.
"""

from __future__ import annotations

import numpy as np
import pytest

from recipes.schema import RolloutSpec
from registry.api import Registry
from registry.errors import Refused
from rollout.canary.controller import CanaryController
from rollout.canary.records import RequestLog, RequestRecord
from tests.support.clock import FakeClock
from tests.support.factories import ArtifactFactory
from tests.support.human_eval import GATED_RECIPE, human_result

MODEL = "support-bot"
PLAN = RolloutSpec.model_validate({"steps": [{"weight": 50}, {"weight": 100}],
                                   "interval": "10s"})


class Matching:
    def verify(self, model: str, version: int) -> tuple[bool, str]:
        return True, "3/3 probe answers equal"


def _traffic(reg: Registry, log: RequestLog, clock: FakeClock, controller: CanaryController,
             seconds: int) -> None:
    rng = np.random.default_rng(5)
    for _ in range(seconds):
        policy = reg.get_traffic(MODEL)
        share = 0 if policy is None else policy.weights.get("canary", 0)
        stages = reg.stage_map(MODEL)
        now = clock.advance(1).timestamp()
        for _ in range(100):
            stage = "canary" if rng.random() * 100 < share else "production"
            log.append(RequestRecord(now, MODEL, stages[stage].number, True,
                                     float(rng.lognormal(np.log(0.1), 0.2))))
        controller.run_once()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_gate_holds_at_the_start_and_at_the_final_promotion(
    registry: Registry, make_artifact: ArtifactFactory, clock: FakeClock,
) -> None:
    registry.register_artifact(make_artifact(MODEL))
    registry.register_artifact(make_artifact(MODEL, recipe_text=GATED_RECIPE))
    registry.promote(MODEL, 1, "production")
    log = RequestLog()
    controller = CanaryController(registry, log, Matching(), clock=clock)

    with pytest.raises(Refused, match="support-bot@v2 has no human evaluation yet"):
        controller.start(MODEL, 2, PLAN)

    registry.record_human_eval(human_result(MODEL, 2, win_rate=0.8, alpha=0.9, other=1))
    controller.start(MODEL, 2, PLAN)
    _traffic(registry, log, clock, controller, 12)  # verified, then the 50% step
    assert registry.list_rollouts(MODEL, limit=1)[0].phase == "progressing"
    # Raters disagree in a later import: the newest evaluation now fails the gate.
    registry.record_human_eval(human_result(MODEL, 2, win_rate=0.8, alpha=0.2, other=1))
    _traffic(registry, log, clock, controller, 40)
    r = registry.list_rollouts(MODEL, limit=1)[0]
    assert (r.phase, r.active) == ("aborted", False)
    assert "alpha 0.20 < min_alpha 0.6" in r.reason
    assert registry.stage_map(MODEL)["production"].number == 1
