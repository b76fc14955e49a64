"""Elastic weight consolidation (Kirkpatrick et al., 2017) as an extra loss term.

    penalty = lambda / 2 * sum_i F_i * (theta_i - theta*_i)^2

F is the diagonal empirical Fisher of the trainable parameters, estimated on
reference ("general") data before training: the mean squared gradient of
the language-model loss per example. theta* are the parameters before
training. For adapters the trainable parameters start at the identity
(LoRA's B = 0), so the penalty keeps the adapter small where the general
data is sensitive. No library offers EWC for transformers models, hence this
module.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


@dataclass
class EWCPenalty:
    fisher: dict[str, torch.Tensor]
    anchor: dict[str, torch.Tensor]
    weight: float

    def __call__(self, model: torch.nn.Module) -> torch.Tensor:
        import torch

        total: torch.Tensor | None = None
        for name, p in model.named_parameters():
            f = self.fisher.get(name)
            if f is None:
                continue
            term = (f * (p - self.anchor[name]).pow(2)).sum()
            total = term if total is None else total + term
        if total is None:
            return torch.zeros((), device=next(model.parameters()).device)
        return 0.5 * self.weight * total

    def summary(self) -> dict[str, float | int]:
        values = [float(f.sum()) for f in self.fisher.values()]
        return {
            "weight": self.weight,
            "parameters": sum(int(f.numel()) for f in self.fisher.values()),
            "fisher_sum": sum(values),
        }


def with_penalty(ewc: EWCPenalty | None, model: torch.nn.Module, result: Any,
                 return_outputs: bool, share: float = 1.0) -> Any:
    """A trainer's ``compute_loss`` result (``loss`` or ``(loss, outputs)``) plus the penalty.

    ``share``: the part of one optimizer step's penalty this loss carries; below 1 when the
    trainer sums several micro-batches' losses into one update without dividing them. In
    evaluation (the model in eval mode) nothing is added: the validation loss, which early
    stopping reads, is the model's loss on the data, not the training objective.
    """
    if ewc is None or not model.training:
        return result
    penalty = ewc(model) * share
    if return_outputs:
        loss, outputs = result
        return loss + penalty, outputs
    return result + penalty


def penalty_share(trainer: Any, num_items_in_batch: Any) -> float:
    """The part of an optimizer step's penalty one micro-batch's loss carries, for a
    ``transformers.Trainer`` (or a trl subclass) in ``compute_loss``.

    A loss the trainer counts as scaled for gradient accumulation (normalised by the step's
    token count, ``num_items_in_batch``) is summed over the step's micro-batches undivided
    (``Trainer.training_step``), so a whole penalty on each would weigh
    ``gradient_accumulation_steps`` times; any other loss is divided there, penalty included.
    """
    scaled = trainer.loss_is_scaled_for_ga
    if scaled is None:
        scaled = ((trainer.model_accepts_loss_kwargs and num_items_in_batch is not None)
                  or trainer.compute_loss_func is not None)
    steps = int(getattr(trainer, "current_gradient_accumulation_steps", 1) or 1)
    return 1.0 / steps if scaled else 1.0


def estimate_fisher(
    model: torch.nn.Module, batches: Iterable[dict[str, torch.Tensor]]
) -> dict[str, torch.Tensor]:
    """Diagonal empirical Fisher of the trainable parameters over single-example batches.

    Runs with dropout off (``eval()``) so the estimate is deterministic, and
    restores the training mode afterwards.
    """
    import torch

    was_training = model.training
    model.eval()
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    fisher = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
    count = 0
    with torch.enable_grad():
        for batch in batches:
            model.zero_grad(set_to_none=True)
            loss = model(**batch).loss
            loss.backward()
            for n, p in params.items():
                if p.grad is not None:
                    fisher[n] += p.grad.detach().float().pow(2)
            count += 1
    model.zero_grad(set_to_none=True)
    if was_training:
        model.train()
    if count == 0:
        raise ValueError("the EWC reference set is empty; nothing to estimate the Fisher from")
    return {n: f / count for n, f in fisher.items()}


def build_penalty(
    model: torch.nn.Module, batches: Iterable[dict[str, torch.Tensor]], weight: float
) -> EWCPenalty:
    fisher = estimate_fisher(model, batches)
    anchor = {
        n: p.detach().clone() for n, p in model.named_parameters() if n in fisher
    }
    return EWCPenalty(fisher, anchor, weight)
