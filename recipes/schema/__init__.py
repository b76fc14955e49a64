"""The recipe schema: what a user commits to git, one document per model.

Every model here is strict and rejects unknown keys, so a typo is an error
with a did-you-mean hint rather than a silently ignored setting. Field
descriptions are the documentation: they land in the exported JSON Schema,
which editors use (through yaml-language-server) to validate as you type.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from recipes.core.durations import DURATION_PATTERN, duration_seconds
from recipes.core.names import (
    MODEL_NAME_PATTERN,
    STAGE_NAME_HINT,
    STAGE_NAME_PATTERN,
    VLLM_LORA_RANKS,
    model_name_problem,
    stage_name_problem,
)
from recipes.schema.base import Strict as Strict

# The training settings live in their own module; importing them from here keeps working.
from recipes.schema.training import TRACKERS as TRACKERS
from recipes.schema.training import DPOSpec as DPOSpec
from recipes.schema.training import EarlyStopping as EarlyStopping
from recipes.schema.training import EWCSpec as EWCSpec
from recipes.schema.training import Objective as Objective
from recipes.schema.training import Tracker as Tracker
from recipes.schema.training import TrainingSpec as TrainingSpec
from recipes.schema.training import distributed_problems, rl_problems

API_VERSION = "reg/v1"

NAME_PATTERN = MODEL_NAME_PATTERN


class DataFormat(StrEnum):
    """How rows of a data file are shaped: alpaca {instruction, input, output}, sharegpt
    {conversations}, openai_chat {messages}, dpo_pairs {prompt, chosen, rejected}, text."""

    alpaca = "alpaca"  # instruction, input, output
    sharegpt = "sharegpt"  # conversations: [{from, value}]
    openai_chat = "openai_chat"  # messages: [{role, content}]
    dpo_pairs = "dpo_pairs"  # prompt, chosen, rejected
    text = "text"  # raw text, for continued pre-training


class AdapterMethod(StrEnum):
    """PEFT method; vLLM serves lora and qlora (the others need deploy.target: none)."""
    lora = "lora"
    qlora = "qlora"
    dora = "dora"
    ia3 = "ia3"
    prefix_tuning = "prefix_tuning"
    prompt_tuning = "prompt_tuning"
    full = "full"


class Metadata(Strict):
    """Who the model is: its name, and what `reg models` shows about it."""
    name: str = Field(
        pattern=NAME_PATTERN,
        description="Model name, unique across recipes: lowercase letters, digits and '-'.",
    )
    description: str = Field(default="", description="Free text shown in `reg models`.")
    labels: dict[str, str] = Field(default_factory=dict, description="Key/value labels.")
    owner: str = Field(default="", description="Team or person responsible for this model.")


class Quantization(Strict):
    """bitsandbytes loading of the base model (QLoRA)."""
    bits: Literal[4, 8] = Field(default=4, description="Load the base model in 4 or 8 bits.")
    quant_type: Literal["nf4", "fp4"] = Field(default="nf4", description="4-bit data type.")
    double_quant: bool = Field(default=True, description="Quantize the quantization constants.")
    compute_dtype: Literal["float32", "bfloat16", "float16"] = Field(
        default="float32", description="dtype of the matmuls; float32 on CPU."
    )


class BaseModelSpec(Strict):
    """The model the adapter is trained on; its files' content is part of the spec hash."""
    path: str = Field(
        min_length=1,
        description="Directory of a Hugging Face model (config.json + safetensors), relative to "
        "the recipe file. It must stay inside the workspace.",
    )
    revision: str | None = Field(default=None, description="Informational revision label.")
    trust_remote_code: bool = Field(
        default=False, description="Run the model's own Python code. Off unless you trust it."
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto", description="Weights dtype; auto is float32 on CPU, bfloat16 on CUDA."
    )
    quantization: Quantization | None = Field(
        default=None, description="bitsandbytes loading; required by adapter.method=qlora."
    )


class FieldMap(Strict):
    """Column names in the data files, when they differ from the format's defaults."""

    instruction: str = Field(default="instruction", description="alpaca: the instruction.")
    input: str = Field(default="input", description="alpaca: the optional input.")
    output: str = Field(default="output", description="alpaca: the answer.")
    messages: str = Field(default="messages", description="openai_chat: [{role, content}].")
    conversations: str = Field(default="conversations", description="sharegpt: [{from, value}].")
    prompt: str = Field(default="prompt", description="dpo_pairs: the prompt.")
    chosen: str = Field(default="chosen", description="dpo_pairs: the preferred answer.")
    rejected: str = Field(default="rejected", description="dpo_pairs: the rejected answer.")
    text: str = Field(default="text", description="text: the raw text.")
    system: str = Field(default="system", description="A row's own system message, if any.")


class DataSource(Strict):
    """One data file."""
    path: str = Field(
        min_length=1, description="jsonl/json/csv/parquet file, relative to the recipe."
    )
    name: str | None = Field(
        default=None, description="Task name used by `mix`; defaults to the file stem."
    )
    format: DataFormat | None = Field(
        default=None, description="Overrides data.format for this source."
    )
    fields: FieldMap | None = Field(
        default=None, description="Overrides data.fields for this source."
    )
    weight: float | None = Field(
        default=None, gt=0, description="Relative weight for mix.strategy=proportional."
    )


class CleanSpec(Strict):
    """Cleaning before the split; `reg data` reports what each rule removed."""
    normalize_whitespace: bool = Field(
        default=True, description="Collapse runs of spaces, strip ends."
    )
    strip_control_chars: bool = Field(default=True, description="Drop control characters.")
    dedupe: bool = Field(default=True, description="Drop exact duplicates by content hash.")
    min_output_chars: int = Field(default=1, ge=0, description="Drop rows whose answer is shorter.")
    max_repetition_ratio: float = Field(
        default=0.5, gt=0, le=1,
        description="Drop rows where one repeated n-gram covers more than this share of the text.",
    )
    max_tokens: int | None = Field(
        default=None, gt=0, description="Drop rows longer than this many tokens (base tokenizer)."
    )
    redact_pii: bool = Field(
        default=True, description="Redact emails, phones, SSNs, cards and IPs."
    )


class SplitSpec(Strict):
    """Held-out shares, by a salted content hash: a row keeps its split as the data grows."""
    validation: float = Field(default=0.1, ge=0, lt=1, description="Share held out for validation.")
    test: float = Field(default=0.1, ge=0, lt=1, description="Share held out for test.")
    seed: int = Field(default=0, description="Salt of the content hash that assigns splits.")

    @model_validator(mode="after")
    def _fractions(self) -> SplitSpec:
        if self.validation + self.test >= 1:
            raise ValueError(
                f"validation + test must be < 1 (got {self.validation} + {self.test}); "
                "leave some data for training"
            )
        return self


class MixSpec(Strict):
    """How several sources are mixed into the training set."""
    strategy: Literal["proportional", "equal", "temperature"] = Field(
        default="proportional",
        description="proportional: by size (or weight); equal: same count per task; "
        "temperature: size^(1/T).",
    )
    temperature: float = Field(default=2.0, gt=0, description="T for strategy=temperature.")


class ReplaySpec(Strict):
    """General-domain data mixed into the training set against forgetting."""
    path: str = Field(min_length=1, description="General-domain data mixed in against forgetting.")
    format: DataFormat | None = Field(default=None, description="Defaults to data.format.")
    ratio: float = Field(
        default=0.1, gt=0, lt=1, description="Share of the training set from replay."
    )


class DataSpec(Strict):
    """Where the training data comes from and how it is prepared."""
    sources: list[DataSource] = Field(min_length=1, description="One or more data files.")
    format: DataFormat = Field(default=DataFormat.openai_chat, description="Default row format.")
    fields: FieldMap = Field(default_factory=FieldMap, description="Default column names.")
    system_prompt: str | None = Field(default=None, description="System message added to chats.")
    clean: CleanSpec = Field(default_factory=CleanSpec)
    split: SplitSpec = Field(default_factory=SplitSpec)
    mix: MixSpec = Field(default_factory=MixSpec)
    replay: ReplaySpec | None = Field(default=None, description="Optional replay of general data.")
    max_examples: int | None = Field(default=None, gt=0, description="Cap on training examples.")


class AdapterSpec(Strict):
    """The PEFT adapter trained on the base model."""
    method: AdapterMethod = Field(default=AdapterMethod.lora, description="PEFT method.")
    r: int = Field(
        default=8, gt=0, le=512, description="LoRA rank; higher learns more, costs memory."
    )
    alpha: float = Field(
        default=16, gt=0, description="LoRA scaling numerator (scale = alpha / r)."
    )
    dropout: float = Field(default=0.05, ge=0, lt=1, description="Dropout on the LoRA input.")
    target_modules: list[str] | Literal["all-linear"] = Field(
        default_factory=lambda: ["q_proj", "v_proj"],
        description="Module names to adapt, or all-linear.",
    )
    bias: Literal["none", "all", "lora_only"] = Field(default="none",
                                                      description="Which biases train.")
    use_rslora: bool = Field(default=False, description="Rank-stabilised scaling alpha/sqrt(r).")
    feedforward_modules: list[str] | None = Field(
        default=None, description="ia3 only: which target modules are feed-forward."
    )
    num_virtual_tokens: int | None = Field(
        default=None, gt=0, description="prefix_tuning / prompt_tuning: number of virtual tokens."
    )
    prompt_init_text: str | None = Field(
        default=None, description="prompt_tuning: initialise virtual tokens from this text."
    )
    modules_to_save: list[str] | None = Field(
        default=None, description="Extra modules trained fully."
    )


class GatesSpec(Strict):
    """Thresholds a version must meet; one that fails a gate is registered as rejected."""
    max_perplexity: float | None = Field(
        default=None, gt=0, description="Test-set perplexity ceiling."
    )
    max_eval_loss: float | None = Field(default=None, gt=0, description="Held-out loss ceiling.")
    min_improvement_vs_base: float | None = Field(
        default=None, description="Required relative perplexity drop vs the base (0.1 = 10%)."
    )
    min_exact_match: float | None = Field(
        default=None, ge=0, le=1, description="Share of greedy test answers equal to reference.")
    min_contains: float | None = Field(
        default=None, ge=0, le=1, description="Share of greedy test answers holding reference.")
    min_rouge_l: float | None = Field(
        default=None, ge=0, le=1, description="Mean ROUGE-L of greedy test answers.")
    max_general_regression: float | None = Field(
        default=None, ge=0, description="Allowed relative perplexity rise on evaluation.general."
    )
    min_pairwise_accuracy: float | None = Field(
        default=None, ge=0, le=1,
        description="Share of test preference pairs ranked right (chosen above rejected): by "
        "the reward model's score (objective reward), by sequence log-probability (dpo).")


class GeneralEval(Strict):
    """General-capability data, to measure how much the tuning forgets (base vs tuned)."""
    path: str = Field(min_length=1, description="General-capability data set (text or chat).")
    format: DataFormat = Field(default=DataFormat.text, description="Row format of the data set.")
    max_examples: int = Field(default=64, gt=0, description="Rows of it evaluated.")


class EvaluationSpec(Strict):
    """Evaluation of the tuned model and the base; the gates decide ready or rejected."""
    generation_examples: int = Field(default=16, ge=0, description="Test rows decoded greedily.")
    max_new_tokens: int = Field(default=32, gt=0, description="Tokens decoded per test row.")
    general: GeneralEval | None = None
    gates: GatesSpec = Field(default_factory=GatesSpec)


class RolloutStepSpec(Strict):
    """One step of a rollout."""
    weight: int = Field(ge=1, le=100, description="Canary traffic percentage at this step.")


class RolloutSpec(Strict):
    """A progressive rollout of each new version against the one production serves."""

    steps: list[RolloutStepSpec] = Field(
        min_length=1, description="Canary weights, increasing; production follows the last."
    )
    interval: str = Field(
        default="10s", pattern=DURATION_PATTERN,
        description="Longest a step waits for a verdict; it ends sooner when the evidence is "
        "clear.",
    )
    min_requests: int = Field(
        default=50, ge=1, description="Requests per side (canary, baseline) before any verdict."
    )
    max_error_rate: float = Field(
        default=0.01, ge=0, le=1,
        description="Absolute ceiling on the canary's error rate; it must also not be "
        "significantly worse than the baseline's.",
    )
    max_latency_ratio: float = Field(
        default=1.25, gt=1,
        description="Largest canary/baseline ratio of p95 latency and of time to first token.",
    )
    failure_limit: int = Field(
        default=1, ge=1, description="Failed analyses before the rollout rolls back."
    )
    on_inconclusive: Literal["pause", "rollback"] = Field(
        default="pause",
        description="What a step does when its interval ends without enough evidence.",
    )
    approval: bool = Field(
        default=False, description="Wait for `reg rollout promote` before the last step."
    )
    alpha: float = Field(
        default=0.01, gt=0, lt=0.5,
        description="Chance of rolling back a candidate as good as the baseline, whole rollout.",
    )

    @field_validator("steps")
    @classmethod
    def _increasing(cls, steps: list[RolloutStepSpec]) -> list[RolloutStepSpec]:
        weights = [s.weight for s in steps]
        if any(b <= a for a, b in itertools.pairwise(weights)):
            raise ValueError(
                f"step weights must increase (got {', '.join(map(str, weights))}); "
                "e.g. 5, 25, 50, 100"
            )
        return steps

    @property
    def interval_s(self) -> float:
        return duration_seconds(self.interval) or 0.0


class HumanEvalGate(Strict):
    """A human evaluation a version must pass before production (`reg eval import` stores it)."""
    min_win_rate: float = Field(
        default=0.5, ge=0, le=1,
        description="Least share of decided rows the version wins against the one compared.")
    min_alpha: float = Field(
        default=0.6, ge=-1, le=1,
        description="Least inter-rater agreement (Krippendorff's alpha, nominal, on choices).")


class DeploySpec(Strict):
    """Where each new ready version goes once registered."""
    target: Literal["vllm", "none"] = Field(default="vllm", description="Serving engine.")
    promote_to: str | None = Field(
        default=None, pattern=STAGE_NAME_PATTERN,
        description="Stage to point at each new ready version.",
    )
    max_model_len: int = Field(default=512, gt=0, description="Engine context length.")
    rollout: RolloutSpec | None = Field(default=None, description="Progressive rollout plan.")
    human_eval: HumanEvalGate | None = Field(
        default=None, description="Human evaluation required before production.")


class Spec(Strict):
    """What to train, how to evaluate it, and where to deploy it."""
    base_model: BaseModelSpec
    data: DataSpec
    adapter: AdapterSpec = Field(default_factory=AdapterSpec)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    deploy: DeploySpec = Field(default_factory=DeploySpec)


class Recipe(Strict):
    """One model's recipe (``kind: Recipe``)."""

    apiVersion: Literal["reg/v1"] = Field(description="Schema version; reg/v1.")
    kind: Literal["Recipe"] = Field(description="Document type; Recipe.")
    metadata: Metadata
    spec: Spec


@dataclass(frozen=True)
class CrossFieldProblem:
    """A rule spanning several fields, broken; ``field`` is the dotted path to blame."""

    field: str
    message: str
    got: str | None = None


def cross_field_problems(spec: Spec) -> list[CrossFieldProblem]:
    """Rules that span several fields. Pure; run after the structural validation."""
    out: list[CrossFieldProblem] = []
    a, t, d = spec.adapter, spec.training, spec.data

    def bad(path: str, message: str, got: object = None) -> None:
        out.append(CrossFieldProblem("spec." + path, message, None if got is None else str(got)))

    rollout = spec.deploy.rollout
    if rollout is not None:
        weights = [s.weight for s in rollout.steps]
        if any(b <= a for a, b in itertools.pairwise(weights)):
            bad("deploy.rollout.steps", "step weights must increase (e.g. 5, 25, 50, 100)",
                weights)
        if spec.deploy.target == "none":
            bad("deploy.rollout", "a rollout needs a serving target; set deploy.target: vllm")
    promote_to = spec.deploy.promote_to
    if promote_to is not None and (problem := stage_name_problem(promote_to)) is not None:
        bad("deploy.promote_to", f"{problem}; {STAGE_NAME_HINT}", promote_to)
    q = spec.base_model.quantization
    if a.method is AdapterMethod.qlora and (q is None or q.bits != 4):
        bad("adapter.method", "qlora needs 4-bit loading: add base_model.quantization: {bits: 4}",
            a.method.value)
    if a.method in (AdapterMethod.prefix_tuning, AdapterMethod.prompt_tuning) and (
        a.num_virtual_tokens is None
    ):
        bad("adapter.num_virtual_tokens", f"{a.method.value} needs num_virtual_tokens (e.g. 16)")
    if (
        a.method is AdapterMethod.ia3
        and a.feedforward_modules is not None
        and isinstance(a.target_modules, list)
        and not set(a.feedforward_modules) <= set(a.target_modules)
    ):
        bad("adapter.feedforward_modules", "must be a subset of adapter.target_modules",
            a.feedforward_modules)
    if spec.deploy.target == "vllm":
        if a.method in (AdapterMethod.lora, AdapterMethod.qlora) and a.r not in VLLM_LORA_RANKS:
            bad("adapter.r", f"vLLM serves LoRA ranks {list(VLLM_LORA_RANKS)} only; "
                "pick one or set deploy.target: none", a.r)
        if a.method in (AdapterMethod.ia3, AdapterMethod.prefix_tuning,
                        AdapterMethod.prompt_tuning, AdapterMethod.dora):
            bad("adapter.method", "vLLM cannot serve this adapter type; use lora or qlora, "
                "or set deploy.target: none", a.method.value)
        if a.method in (AdapterMethod.lora, AdapterMethod.qlora) and a.bias != "none":
            bad("adapter.bias", "vLLM serves LoRA adapters with bias: none only", a.bias)
    for path, message, got in rl_problems(
            t, method=a.method.value, deploy_target=spec.deploy.target,
            general=spec.evaluation.general is not None,
            gates_set=set(spec.evaluation.gates.model_dump(exclude_none=True))):
        bad(path, message, got)
    for path, message, got in distributed_problems(
            t, quantized=spec.base_model.quantization is not None):
        bad(path, message, got)
    chats = {DataFormat.alpaca, DataFormat.sharegpt, DataFormat.openai_chat}
    wanted = {
        Objective.dpo: {DataFormat.dpo_pairs},
        Objective.reward: {DataFormat.dpo_pairs},
        Objective.grpo: chats,  # the prompt side of each chat: turns before the last answer
        Objective.cpt: {DataFormat.text},
        Objective.sft: {DataFormat.alpaca, DataFormat.sharegpt, DataFormat.openai_chat},
    }[t.objective]
    for i, src in enumerate(d.sources):
        fmt = src.format or d.format
        if fmt not in wanted:
            where = f"data.sources.{i}.format" if src.format else "data.format"
            bad(where, f"training.objective {t.objective.value} needs data in format "
                f"{' or '.join(sorted(w.value for w in wanted))}", fmt.value)
    if d.replay is not None and (d.replay.format or d.format) not in wanted:
        fmt = d.replay.format or d.format
        bad("data.replay.format" if d.replay.format else "data.replay",
            f"replay rows must suit training.objective {t.objective.value}: format "
            f"{' or '.join(sorted(w.value for w in wanted))}", fmt.value)
    if t.early_stopping is not None and t.eval_every_steps is None:
        bad("training.early_stopping", "needs training.eval_every_steps (e.g. 10)")
    if spec.evaluation.gates.max_general_regression is not None and spec.evaluation.general is None:
        bad("evaluation.gates.max_general_regression", "needs evaluation.general (a data set)")
    if spec.training.packing and t.objective is Objective.dpo:
        bad("training.packing", "packing is not supported with objective dpo", True)
    return out


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a recipe document, for editors and `reg schema`."""
    schema = Recipe.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "reg recipe"
    return schema


def is_valid_name(name: str) -> bool:
    return model_name_problem(name) is None

