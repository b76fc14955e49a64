"""Names inside a training run's workdir that more than the trainer reads.

Light on purpose (no torch, no trl): the reconciler and the Ray executor place files
there before training starts.
"""

from __future__ import annotations

# The GRPO recipe's reward models, each fetched from the store into REWARD_MODELS_DIR/<hex>
# (rollout.gitops.reward_pins writes them; recipes.training.grpo loads them).
REWARD_MODELS_DIR = "reward-models"
