"""The SFT and CPT training path: pre-tokenized rows -> tensors -> a lean Trainer.

Why a ``transformers.Trainer`` subclass and not trl's ``SFTTrainer`` here:
the data pipeline already tokenized every row with the chat template and
masked the labels outside the assistant's turns (completion-only loss), so
SFTTrainer's own tokenization and collation would redo finished work, and
its ``compute_loss`` computes entropy and token accuracy on every step (a
full softmax over the vocabulary, outside autograd). On the tiny model that
made it ~34 steps/s against ~60 for a plain Trainer (shared/PLATFORM.md).
What we keep from trl is its best-fit-decreasing packer (``pack_dataset``).

What makes this path faster than a plain Trainer with the standard
``DataCollatorForSeq2Seq``: rows become tensors once, up front (no Arrow
decode and no ``tokenizer.pad`` per step), and with packing, several
examples share one row with ``position_ids`` restarting at each example, so
no compute is spent on padding and transformers builds the block-diagonal
attention mask from the position ids (no cross-example attention).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from transformers import Trainer

from recipes.training.checkpoint import SafeCheckpointMixin
from recipes.training.ewc import penalty_share, with_penalty

if TYPE_CHECKING:
    import datasets

    from recipes.training.ewc import EWCPenalty

IGNORE_INDEX = -100
# A batch key the collators add and the trainer removes before the forward
# pass: the number of real (non-padding) tokens, for tokens/s.
REAL_TOKENS = "num_real_tokens"


@dataclass
class TokenRows(torch.utils.data.Dataset[dict[str, torch.Tensor]]):
    """Training rows held as tensors; ``seq_lengths`` is set for packed rows."""

    input_ids: list[torch.Tensor]
    labels: list[torch.Tensor]
    seq_lengths: list[list[int]] | None = None

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        row: dict[str, Any] = {"input_ids": self.input_ids[i], "labels": self.labels[i]}
        if self.seq_lengths is not None:
            row["seq_lengths"] = self.seq_lengths[i]
        return row

    @property
    def num_tokens(self) -> int:
        return sum(int(t.numel()) for t in self.input_ids)


def _label_column(ds: datasets.Dataset) -> str:
    # CPT rows have no labels: every token is a target.
    return "labels" if "labels" in ds.column_names else "input_ids"


def token_rows(ds: datasets.Dataset, max_len: int) -> TokenRows:
    """One row per example, truncated to ``max_len`` tokens."""
    ids = ds["input_ids"]
    labels = ds[_label_column(ds)]
    return TokenRows(
        [torch.tensor(x[:max_len], dtype=torch.long) for x in ids],
        [torch.tensor(y[:max_len], dtype=torch.long) for y in labels],
    )


def packed_rows(ds: datasets.Dataset, max_len: int, *, split_long: bool) -> TokenRows:
    """Examples packed into rows of at most ``max_len`` tokens by best-fit decreasing.

    ``split_long`` (CPT) cuts over-long texts into pieces; otherwise (SFT)
    over-long examples are truncated, keeping conversations whole.
    """
    from trl.data_utils import pack_dataset

    if _label_column(ds) == "labels":
        cols = ds.select_columns(["input_ids", "labels"])
    else:
        cols = ds.select_columns(["input_ids"]).map(lambda r: {"labels": r["input_ids"]})
    packed = pack_dataset(
        cols.select_columns(["input_ids", "labels"]), max_len,
        strategy="bfd_split" if split_long else "bfd",
    )
    return TokenRows(
        [torch.tensor(x, dtype=torch.long) for x in packed["input_ids"]],
        [torch.tensor(y, dtype=torch.long) for y in packed["labels"]],
        [list(map(int, s)) for s in packed["seq_lengths"]],
    )


@dataclass(frozen=True)
class PadCollator:
    """Right-pads a batch: input ids with the pad id, labels with -100."""

    pad_id: int

    def __call__(self, rows: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        width = max(int(r["input_ids"].numel()) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            n = int(r["input_ids"].numel())
            ids[i, :n] = r["input_ids"]
            labels[i, :n] = r["labels"]
            mask[i, :n] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": labels,
                REAL_TOKENS: mask.sum()}


@dataclass(frozen=True)
class PackedCollator:
    """Packed rows with ``position_ids`` restarting at each example and no attention mask.

    transformers detects the restarts and masks attention block-diagonally;
    the first label of each example is dropped so no example learns to
    predict its neighbour's first token.
    """

    pad_id: int

    def __call__(self, rows: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        width = max(int(r["input_ids"].numel()) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        pos = torch.zeros((len(rows), width), dtype=torch.long)
        real = 0
        for i, r in enumerate(rows):
            n = int(r["input_ids"].numel())
            ids[i, :n] = r["input_ids"]
            labels[i, :n] = r["labels"]
            start = 0
            for length in r["seq_lengths"]:
                pos[i, start:start + length] = torch.arange(length)
                labels[i, start] = IGNORE_INDEX
                start += length
            # Padding becomes one more "example" of its own, attended by nothing real.
            if n < width:
                pos[i, n:] = torch.arange(width - n)
            real += n
        return {"input_ids": ids, "position_ids": pos, "labels": labels,
                REAL_TOKENS: torch.tensor(real)}


class RegTrainer(SafeCheckpointMixin, Trainer):
    """Trainer with atomic pickle-free checkpoints, real-token counting and an optional EWC term."""

    ewc: EWCPenalty | None = None
    reg_packed: bool = False

    def compute_loss(
        self, model: torch.nn.Module, inputs: dict[str, Any], return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> Any:
        inputs = {k: v for k, v in inputs.items() if k != REAL_TOKENS}
        result: Any = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        return with_penalty(self.ewc, model, result, return_outputs,
                            share=penalty_share(self, num_items_in_batch))

    def prediction_step(self, model: torch.nn.Module, inputs: dict[str, Any],
                        prediction_loss_only: bool, ignore_keys: list[str] | None = None) -> Any:
        inputs = {k: v for k, v in inputs.items() if k != REAL_TOKENS}
        return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)

    def _track_num_input_tokens(self, inputs: dict[str, Any]) -> None:
        if REAL_TOKENS in inputs:
            self.state.num_input_tokens_seen += int(inputs[REAL_TOKENS])
