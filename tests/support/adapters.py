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


def train_keyword_adapter(workspace: Path, workdir: Path, *, keyword: str) -> Path:
    """Train support-bot with every answer starting with ``keyword``; return the artifact."""
    from recipes.loading.loader import load_recipe
    from recipes.training.entry import train

    data = workspace / "data" / "support.jsonl"
    original = workspace / "data" / ".support.original.jsonl"
    if not original.exists():
        original.write_bytes(data.read_bytes())
    text = original.read_text(encoding="utf-8")
    data.write_text(text.replace(f'"{KEYWORD_IN_EXAMPLE}', f'"{keyword}'), encoding="utf-8")
    loaded = load_recipe(workspace / "recipes" / f"{MODEL}.yaml")
    return train(loaded, workdir, progress=False).artifact_dir
