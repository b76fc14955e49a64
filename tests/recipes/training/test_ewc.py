"""The EWC penalty as added to a trainer's loss."""

from __future__ import annotations

import pytest
import torch

from recipes.training.ewc import EWCPenalty, with_penalty


def _model_and_penalty() -> tuple[torch.nn.Module, EWCPenalty]:
    model = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 2.0]]))
    fisher = {"weight": torch.ones(1, 2)}
    anchor = {"weight": torch.zeros(1, 2)}
    return model, EWCPenalty(fisher=fisher, anchor=anchor, weight=2.0)


def test_penalty_is_added_to_a_bare_loss() -> None:
    model, ewc = _model_and_penalty()
    loss = with_penalty(ewc, model, torch.tensor(1.0), return_outputs=False)
    assert float(loss) == pytest.approx(1.0 + 0.5 * 2.0 * (1.0 + 4.0))


def test_penalty_is_added_to_the_loss_of_a_pair_and_outputs_pass_through() -> None:
    model, ewc = _model_and_penalty()
    outputs = {"logits": torch.zeros(1)}
    loss, out = with_penalty(ewc, model, (torch.tensor(0.5), outputs), return_outputs=True)
    assert float(loss) == pytest.approx(0.5 + 5.0)
    assert out is outputs


def test_without_ewc_the_result_is_unchanged() -> None:
    model, _ewc = _model_and_penalty()
    result = (torch.tensor(0.5), {"logits": torch.zeros(1)})
    assert with_penalty(None, model, result, return_outputs=True) is result


def test_a_share_of_the_penalty_is_added_for_one_micro_batch_of_several() -> None:
    model, ewc = _model_and_penalty()
    loss = with_penalty(ewc, model, torch.tensor(1.0), return_outputs=False, share=0.5)
    assert float(loss) == pytest.approx(1.0 + 0.5 * 5.0)


def test_nothing_is_added_in_evaluation() -> None:
    model, ewc = _model_and_penalty()
    model.eval()
    loss = torch.tensor(1.0)
    assert with_penalty(ewc, model, loss, return_outputs=False) is loss
