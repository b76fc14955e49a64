"""Every field of the recipe does what it says: each one of the JSON Schema is listed here
with the code that consumes it, and a new field without an entry fails this test.

An entry names a function, method or table (``module.qualname``); the test checks that it
exists and that its source (a table: its keys) names the field. A section that is always
present (``spec.training``) is consumed through its fields; one that may be absent
(``spec.training.ewc``) needs its own entry, since its presence changes what happens.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from recipes.schema import json_schema

# Fields whose only effect is to be validated: the loader refuses any other value.
SCHEMA_ONLY = {
    "apiVersion": "selects the schema version (reg/v1); any other is refused at load",
    "kind": "selects the document type (Recipe); any other is refused at load",
}

MAP_ROW = "recipes.data.load.map_row"
PREPARE = "recipes.data.pipeline.prepare_data"
PEFT = "recipes.training.model.build_peft_config"
TRAINING_ARGS = "recipes.training.loop.training_arguments"
RUN_TRAINING = "recipes.training.loop.run_training"
QUANT = "recipes.training.model._quantization_config"
GATES = "recipes.evaluation.gates._GATES"
GRPO_CONFIG = "recipes.training.grpo.grpo_config"
GRPO_REWARDS = "recipes.training.grpo.reward_funcs"
RULE_SCORE = "recipes.training.rewards.rule_score"
FIELD_MAP = ("instruction", "input", "output", "messages", "conversations", "prompt", "chosen",
             "rejected", "text", "system")

FIELD_CONSUMERS: dict[str, str] = {
    "metadata.name": "recipes.loading.recipe.LoadedRecipe.name",
    "metadata.description": "registry.register.metadata_changes",
    "metadata.labels": "registry.register.metadata_changes",
    "metadata.owner": "registry.register.metadata_changes",
    "spec.base_model.path": "recipes.loading.recipe.LoadedRecipe.base_model_ref",
    "spec.base_model.revision": "recipes.training.entry.default_identity",
    "spec.base_model.trust_remote_code": "recipes.training.model.load_pretrained",
    "spec.base_model.dtype": "recipes.training.model.load_pretrained",
    "spec.base_model.quantization": "recipes.training.entry._evaluation_models",
    "spec.base_model.quantization.bits": QUANT,
    "spec.base_model.quantization.quant_type": QUANT,
    "spec.base_model.quantization.double_quant": QUANT,
    "spec.base_model.quantization.compute_dtype": QUANT,
    "spec.data.sources": PREPARE,
    "spec.data.sources.path": PREPARE,
    "spec.data.sources.name": "recipes.data.pipeline._mix_train",
    "spec.data.sources.format": PREPARE,
    "spec.data.sources.fields": PREPARE,
    **{f"spec.data.sources.fields.{f}": MAP_ROW for f in FIELD_MAP},
    "spec.data.sources.weight": "recipes.data.pipeline._mix_train",
    "spec.data.format": PREPARE,
    **{f"spec.data.fields.{f}": MAP_ROW for f in FIELD_MAP},
    "spec.data.system_prompt": PREPARE,
    "spec.data.clean.normalize_whitespace": "recipes.data.clean.clean_text",
    "spec.data.clean.strip_control_chars": "recipes.data.clean.clean_text",
    "spec.data.clean.redact_pii": "recipes.data.clean.clean_text",
    "spec.data.clean.dedupe": "recipes.data.clean.clean_examples",
    "spec.data.clean.min_output_chars": "recipes.data.clean.drop_reason",
    "spec.data.clean.max_repetition_ratio": "recipes.data.clean.drop_reason",
    "spec.data.clean.max_tokens": PREPARE,
    "spec.data.split.validation": PREPARE,
    "spec.data.split.test": PREPARE,
    "spec.data.split.seed": PREPARE,
    "spec.data.mix.strategy": "recipes.data.pipeline._mix_train",
    "spec.data.mix.temperature": "recipes.data.pipeline._mix_train",
    "spec.data.replay": "recipes.data.pipeline._replay",
    "spec.data.replay.path": "recipes.data.pipeline._replay",
    "spec.data.replay.format": "recipes.data.pipeline._replay",
    "spec.data.replay.ratio": "recipes.data.pipeline._replay",
    "spec.data.max_examples": PREPARE,
    "spec.adapter.method": PEFT,
    "spec.adapter.r": PEFT,
    "spec.adapter.alpha": PEFT,
    "spec.adapter.dropout": PEFT,
    "spec.adapter.target_modules": PEFT,
    "spec.adapter.bias": PEFT,
    "spec.adapter.use_rslora": PEFT,
    "spec.adapter.feedforward_modules": PEFT,
    "spec.adapter.num_virtual_tokens": PEFT,
    "spec.adapter.prompt_init_text": PEFT,
    "spec.adapter.modules_to_save": PEFT,
    "spec.training.objective": RUN_TRAINING,
    "spec.training.epochs": TRAINING_ARGS,
    "spec.training.max_steps": TRAINING_ARGS,
    "spec.training.learning_rate": "recipes.training.entry._setup",
    "spec.training.lr_scheduler": TRAINING_ARGS,
    "spec.training.warmup_ratio": TRAINING_ARGS,
    "spec.training.weight_decay": TRAINING_ARGS,
    "spec.training.max_grad_norm": TRAINING_ARGS,
    "spec.training.batch_size": TRAINING_ARGS,
    "spec.training.gradient_accumulation_steps": TRAINING_ARGS,
    "spec.training.max_seq_length": "recipes.training.loop._sft_trainer",
    "spec.training.packing": "recipes.training.loop._sft_trainer",
    "spec.training.seed": TRAINING_ARGS,
    "spec.training.precision": "recipes.training.model.device_settings",
    "spec.training.gradient_checkpointing": "recipes.training.model.device_settings",
    "spec.training.eval_every_steps": TRAINING_ARGS,
    "spec.training.early_stopping": RUN_TRAINING,
    "spec.training.early_stopping.patience": RUN_TRAINING,
    "spec.training.early_stopping.threshold": RUN_TRAINING,
    "spec.training.checkpoint_every_steps": TRAINING_ARGS,
    "spec.training.keep_checkpoints": RUN_TRAINING,
    "spec.training.dpo": "recipes.training.loop._dpo_trainer",
    "spec.training.dpo.beta": "recipes.training.loop._dpo_trainer",
    "spec.training.dpo.loss_type": "recipes.training.loop._dpo_trainer",
    "spec.training.distributed": "recipes.training.entry._run",
    "spec.training.distributed.nproc_per_node": "recipes.training.entry._run",
    "spec.training.grpo": "recipes.training.loop._grpo_trainer",
    "spec.training.grpo.rewards": GRPO_REWARDS,
    "spec.training.grpo.rewards.model": GRPO_REWARDS,
    "spec.training.grpo.rewards.weight": GRPO_CONFIG,
    "spec.training.grpo.rewards.contains": RULE_SCORE,
    "spec.training.grpo.rewards.regex": "recipes.training.rewards.rule_reward_func",
    "spec.training.grpo.rewards.length": RULE_SCORE,
    "spec.training.grpo.rewards.length.min": RULE_SCORE,
    "spec.training.grpo.rewards.length.max": RULE_SCORE,
    "spec.training.grpo.num_generations": GRPO_CONFIG,
    "spec.training.grpo.max_completion_length": GRPO_CONFIG,
    "spec.training.grpo.beta": GRPO_CONFIG,
    "spec.training.grpo.temperature": GRPO_CONFIG,
    "spec.training.ewc": RUN_TRAINING,
    "spec.training.ewc.weight": "recipes.training.loop._ewc_penalty",
    "spec.training.ewc.reference": "recipes.training.loop._reference_texts",
    "spec.training.ewc.samples": "recipes.training.loop._reference_texts",
    "spec.training.report_to": TRAINING_ARGS,
    "spec.training.resources": "rollout.gitops.executor.check_in_process",
    "spec.training.resources.cpus": "rollout.gitops.executor.unmet_resources",
    "spec.training.resources.gpus": "rollout.gitops.ray_executor.ray_options",
    "spec.training.resources.memory": "rollout.gitops.ray_executor.ray_options",
    "spec.evaluation.generation_examples": "recipes.evaluation.evaluate.evaluate",
    "spec.evaluation.max_new_tokens": "recipes.evaluation.evaluate.evaluate",
    "spec.evaluation.general": "recipes.training.entry._evaluate",
    "spec.evaluation.general.path": "recipes.data.pipeline.load_eval_texts",
    "spec.evaluation.general.format": "recipes.data.pipeline.load_eval_texts",
    "spec.evaluation.general.max_examples": "recipes.data.pipeline.load_eval_texts",
    "spec.evaluation.gates.max_perplexity": GATES,
    "spec.evaluation.gates.max_eval_loss": GATES,
    "spec.evaluation.gates.min_improvement_vs_base": GATES,
    "spec.evaluation.gates.min_exact_match": GATES,
    "spec.evaluation.gates.min_contains": GATES,
    "spec.evaluation.gates.min_rouge_l": GATES,
    "spec.evaluation.gates.max_general_regression": GATES,
    "spec.evaluation.gates.min_pairwise_accuracy": GATES,
    "spec.deploy.target": "registry.deployments.servable_problem",
    "spec.deploy.promote_to": "recipes.loading.recipe.LoadedRecipe.promote_to",
    "spec.deploy.max_model_len": "serving.engines.process.engine_spec",
    "spec.deploy.rollout": "recipes.loading.recipe.LoadedRecipe.rolls_out",
    "spec.deploy.human_eval": "registry.human_eval.requirement",
    "spec.deploy.human_eval.min_win_rate": "recipes.evaluation.human.results.gate_problems",
    "spec.deploy.human_eval.min_alpha": "recipes.evaluation.human.results.gate_problems",
    "spec.deploy.rollout.steps": "rollout.canary.decide._next_step",
    "spec.deploy.rollout.steps.weight": "rollout.canary.decide._next_step",
    "spec.deploy.rollout.interval": "rollout.canary.analysis.step_verdict",
    "spec.deploy.rollout.min_requests": "rollout.canary.analysis._error_check",
    "spec.deploy.rollout.max_error_rate": "rollout.canary.analysis._error_check",
    "spec.deploy.rollout.max_latency_ratio": "rollout.canary.analysis._latency_check",
    "spec.deploy.rollout.failure_limit": "rollout.canary.decide.decide",
    "spec.deploy.rollout.on_inconclusive": "rollout.canary.decide.decide",
    "spec.deploy.rollout.approval": "rollout.canary.decide._next_step",
    "spec.deploy.rollout.alpha": "rollout.canary.analysis.alpha_per_test",
}


def _fields(schema: dict[str, Any]) -> Iterator[tuple[str, bool, bool]]:
    """(dotted path, is a section, may be absent) for every property of a JSON Schema."""
    defs: dict[str, Any] = schema.get("$defs", {})

    def resolve(node: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in node:
            node = defs[node["$ref"].rsplit("/", 1)[-1]]
        return node

    def props(node: dict[str, Any]) -> dict[str, Any]:
        node = resolve(node)
        if node.get("type") == "array":
            return props(node["items"])
        out: dict[str, Any] = dict(node.get("properties", {}))
        for alt in [*node.get("anyOf", []), *node.get("oneOf", [])]:
            out.update(props(alt))
        return out

    def walk(node: dict[str, Any], prefix: str) -> Iterator[tuple[str, bool, bool]]:
        for name, sub in props(node).items():
            path = f"{prefix}{name}"
            nullable = any(alt.get("type") == "null" for alt in sub.get("anyOf", []))
            children = props(sub)
            yield path, bool(children), nullable
            yield from walk(sub, path + ".")

    yield from walk(schema, "")


def _needs_entry(fields: list[tuple[str, bool, bool]]) -> list[str]:
    return [path for path, section, nullable in fields
            if (not section or nullable) and path not in SCHEMA_ONLY]


FIELDS = list(_fields(json_schema()))
NEEDS_ENTRY = _needs_entry(FIELDS)


def _resolve(target: str) -> Any:
    """The object ``module.qualname`` names (the longest importable module prefix)."""
    parts = target.split(".")
    for i in range(len(parts) - 1, 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(target)


def test_every_field_has_an_entry_and_every_entry_a_field() -> None:
    missing = [p for p in NEEDS_ENTRY if p not in FIELD_CONSUMERS]
    assert missing == [], f"fields nothing is listed as consuming: {missing}"
    known = {path for path, _, _ in FIELDS}
    assert sorted(set(FIELD_CONSUMERS) - known) == []  # no entry for a field that is gone
    assert set(SCHEMA_ONLY) <= known


def test_a_new_field_without_an_entry_is_caught() -> None:
    schema = json_schema()
    schema["$defs"]["Metadata"]["properties"]["team_channel"] = {"type": "string"}
    new = [p for p in _needs_entry(list(_fields(schema))) if p not in FIELD_CONSUMERS]
    assert new == ["metadata.team_channel"]


@pytest.mark.parametrize("path", NEEDS_ENTRY)
def test_the_consumer_exists_and_names_the_field(path: str) -> None:
    target = FIELD_CONSUMERS[path]
    assert not target.startswith("recipes.schema."), "the schema describes, it does not consume"
    obj = _resolve(target)
    leaf = path.rsplit(".", 1)[-1]
    if isinstance(obj, Mapping):
        assert leaf in obj, f"{target} has no key {leaf!r}"
        return
    fn: Any = obj.fget if isinstance(obj, property) else obj
    source = inspect.getsource(fn)
    # The field, or its value in seconds (``interval_s`` for a duration such as ``interval``).
    assert re.search(rf"\b{re.escape(leaf)}(_s)?\b", source), f"{target} never mentions {leaf!r}"
