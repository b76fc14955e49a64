"""The serving tests' two versions, trained by the project's own trainer.

The example workspace's support-bot recipe is trained twice: once on its data
(every answer starts with "alpha"), once with that keyword replaced (e.g.
"bravo"), so a response's content proves which version served it. This is the
same path `reg reconcile` takes (`recipes.training.entry.train`), producing real
artifacts with manifests that the registry stores and verifies.
"""

from __future__ import annotations

from pathlib import Path

MODEL = "support-bot"
KEYWORD_IN_EXAMPLE = "alpha"
DEFAULT_MAX_MODEL_LEN = 512  # the example recipe's deploy.max_model_len


def train_keyword_adapter(workspace: Path, workdir: Path, *, keyword: str,
                          max_model_len: int | None = None) -> Path:
    """Train support-bot with every answer starting with ``keyword``; return the artifact.

    ``max_model_len`` replaces the recipe's ``deploy.max_model_len`` (the example's 512).
    """
    from recipes.loading.loader import load_recipe
    from recipes.training.entry import train

    data = workspace / "data" / "support.jsonl"
    original = workspace / "data" / ".support.original.jsonl"
    if not original.exists():
        original.write_bytes(data.read_bytes())
    text = original.read_text(encoding="utf-8")
    data.write_text(text.replace(f'"{KEYWORD_IN_EXAMPLE}', f'"{keyword}'), encoding="utf-8")
    recipe = workspace / "recipes" / f"{MODEL}.yaml"
    original_recipe = workspace / f".{MODEL}.original.yaml"  # outside recipes/: no recipe
    if not original_recipe.exists():
        original_recipe.write_bytes(recipe.read_bytes())
    recipe_text = original_recipe.read_text(encoding="utf-8")
    if max_model_len is not None:
        line = f"max_model_len: {DEFAULT_MAX_MODEL_LEN}"
        if line not in recipe_text:
            raise ValueError(f"{original_recipe} has no `{line}` to replace")
        recipe_text = recipe_text.replace(line, f"max_model_len: {max_model_len}", 1)
    recipe.write_text(recipe_text, encoding="utf-8")
    loaded = load_recipe(recipe)
    return train(loaded, workdir, progress=False).artifact_dir
