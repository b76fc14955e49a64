"""The recipe's ``spec.training`` section: the objective and how it is trained."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, field_validator

from recipes.core.names import MODEL_NAME_PATTERN, STAGE_NAME_PATTERN
from recipes.core.text import shown
from recipes.schema.base import Strict


class Objective(StrEnum):
    """sft: loss on the assistant's turns; dpo: preference pairs; cpt: packed raw text;
    reward: a reward model from preference pairs; grpo: a policy against training.grpo.rewards."""
    sft = "sft"  # supervised fine-tuning, loss on the assistant's turns only
    dpo = "dpo"  # direct preference optimisation on prompt/chosen/rejected
    cpt = "cpt"  # continued pre-training on raw text, packed
    reward = "reward"  # a reward model (a scalar score head) trained on chosen vs rejected
    grpo = "grpo"  # group relative policy optimisation on prompts, scored by rewards


class EarlyStopping(Strict):
    """Stop when the validation loss stops falling (needs training.eval_every_steps)."""
    patience: int = Field(
        default=3, gt=0, description="Evaluations without improvement before stopping."
    )
    threshold: float = Field(default=0.0, ge=0, description="Minimum decrease of validation loss.")


class EWCSpec(Strict):
    """Elastic weight consolidation: a penalty on moving weights the reference data needs."""
    weight: float = Field(default=100.0, gt=0, description="lambda of the EWC penalty.")
    reference: str | None = Field(
        default=None, description="Data for the Fisher estimate; defaults to the replay data."
    )
    samples: int = Field(default=32, gt=0, description="Examples used for the Fisher estimate.")


# The trackers ``training.report_to`` may name: the transformers integrations reg installs
# with its ``tracking`` extra and ties to the registry (recipes.training.tracking).
Tracker = Literal["mlflow", "tensorboard"]
TRACKERS: tuple[Tracker, ...] = ("mlflow", "tensorboard")


class DPOSpec(Strict):
    """Settings of objective dpo (trl's DPOTrainer)."""
    beta: float = Field(default=0.1, gt=0, description="Strength of the KL constraint.")
    loss_type: Literal["sigmoid", "ipo", "hinge"] = Field(default="sigmoid",
                                                          description="trl's DPO loss.")


# A registered reward model: NAME@vN (a fixed version) or NAME:STAGE (the version a stage
# points at when the recipe is planned; the plan pins it, so training never follows a stage).
_MODEL = MODEL_NAME_PATTERN.strip("^$")
_STAGE = STAGE_NAME_PATTERN.strip("^$")
REWARD_MODEL_REF = re.compile(
    rf"^(?P<model>{_MODEL})(?:@v(?P<number>[1-9][0-9]*)|:(?P<stage>{_STAGE}))$")
REWARD_MODEL_REF_HINT = ("write NAME@vN (e.g. tone-judge@v2) or NAME:STAGE "
                         "(e.g. tone-judge:production)")


class ModelReward(Strict):
    """The score of a registered reward model (a version trained with objective: reward)."""
    model: str = Field(
        description="NAME@vN or NAME:STAGE; a stage is resolved to its version when the recipe "
        "is planned, and that version's artifact digest is part of the spec hash.")
    weight: float = Field(default=1.0, description="Weight of this reward in the sum.")

    @field_validator("model")
    @classmethod
    def _ref(cls, value: str) -> str:
        if REWARD_MODEL_REF.match(value) is None:
            raise ValueError(
                f"{shown(value)} is not a reward model reference; {REWARD_MODEL_REF_HINT}")
        return value


class ContainsReward(Strict):
    """1 when the completion contains the text, else 0."""
    contains: str = Field(min_length=1, description="Text the completion should contain.")
    weight: float = Field(default=1.0, description="Weight of this reward in the sum.")


class RegexReward(Strict):
    """1 when the regular expression (Python syntax) matches somewhere in the completion."""
    regex: str = Field(min_length=1, description="Python regular expression searched for.")
    weight: float = Field(default=1.0, description="Weight of this reward in the sum.")

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as e:
            raise ValueError(f"regex {shown(value)} does not compile: {e}; fix the pattern "
                             "(Python re syntax; escape literal characters like . or ( with \\)"
                             ) from None
        return value


class LengthBounds(Strict):
    """Completion length in characters; a bound left out does not apply."""
    min: int | None = Field(default=None, ge=0, description="Fewest characters wanted.")
    max: int | None = Field(default=None, gt=0, description="Most characters wanted.")


class LengthReward(Strict):
    """1 inside the bounds; outside, bound / length above max and length / bound below min."""
    length: LengthBounds = Field(description="{min, max} characters.")
    weight: float = Field(default=1.0, description="Weight of this reward in the sum.")


REWARD_KINDS = ("model", "contains", "regex", "length")


def _reward_kind(value: Any) -> str | None:
    """Which reward an entry is, by its key. The tags hold "[" so the loader's error
    locations skip them (they are not keys the user wrote)."""
    if isinstance(value, dict):
        kind = next((k for k in REWARD_KINDS if k in value), None)
    else:
        kind = next((k for k in REWARD_KINDS if hasattr(value, k)), None)
    return None if kind is None else f"reward[{kind}]"


Reward = Annotated[
    Annotated[ModelReward, Tag("reward[model]")]
    | Annotated[ContainsReward, Tag("reward[contains]")]
    | Annotated[RegexReward, Tag("reward[regex]")]
    | Annotated[LengthReward, Tag("reward[length]")],
    Discriminator(_reward_kind, custom_error_type="reward_kind",
                  custom_error_message="a reward needs one of the keys model, contains, regex "
                  "or length (e.g. {contains: 'thank you', weight: 1.0})"),
]


class GRPOSpec(Strict):
    """Settings of objective grpo (trl's GRPOTrainer): what is rewarded and how it samples."""
    rewards: list[Reward] = Field(
        default_factory=list,
        description="Reward functions summed with their weights: {model: NAME@vN | NAME:STAGE}, "
        "{contains: TEXT}, {regex: PATTERN}, {length: {min, max}}.")
    num_generations: int = Field(
        default=4, ge=2, description="Completions sampled per prompt (the group); "
        "batch_size x gradient_accumulation_steps must be a multiple of it.")
    max_completion_length: int = Field(default=32, gt=0, description="Tokens per completion.")
    beta: float = Field(default=0.0, ge=0, description="KL coefficient against the base; "
                        "0 holds no reference model.")
    temperature: float = Field(default=1.0, gt=0, description="Sampling temperature.")


# The most processes one run may start on a node: the largest GPU count of common nodes (8,
# 16 on the biggest HGX boards). More than that is a typo, not a machine.
MAX_NPROC_PER_NODE = 16


class DistributedSpec(Strict):
    """Several processes per run (torchrun, DDP): gloo on CPU, NCCL on CUDA."""
    nproc_per_node: int = Field(
        default=1, ge=1, le=MAX_NPROC_PER_NODE,
        description="Training processes on this node (torchrun --nproc_per_node), one per GPU "
        "on CUDA; 1 trains in the calling process. Each process takes batch_size examples "
        "a step: the effective batch is batch_size x gradient_accumulation_steps x this, and "
        "it is part of the spec hash.")

    @field_validator("nproc_per_node", mode="before")
    @classmethod
    def _in_range(cls, value: object) -> object:
        # Before pydantic's own bound check, so the message carries the fix.
        if isinstance(value, int) and not isinstance(value, bool) and not (
                1 <= value <= MAX_NPROC_PER_NODE):
            raise ValueError(
                f"nproc_per_node must be from 1 to {MAX_NPROC_PER_NODE} (got {value}): one "
                "process per GPU on CUDA, at most one per core on CPU; 1 (or leaving "
                "training.distributed out) trains in one process")
        return value


# ---- training.resources: what one run asks of the machine or cluster that trains it --------

_MEMORY = re.compile(r"^\s*(?P<n>[0-9]+(?:\.[0-9]+)?)\s*(?P<unit>[KMGT]i?B?|B)?\s*$", re.I)
_UNITS = {"": 1, "B": 1, "K": 1000, "M": 1000**2, "G": 1000**3, "T": 1000**4,
          "KI": 1 << 10, "MI": 1 << 20, "GI": 1 << 30, "TI": 1 << 40}
MEMORY_HINT = "write bytes (2147483648) or a size with a unit: 512MiB, 2GiB, 8GB"


def memory_bytes(value: int | str) -> int:
    """``2GiB`` -> 2147483648; an int is bytes already. Raises ValueError with the fix. Pure."""
    if isinstance(value, int):
        return value
    m = _MEMORY.match(value)
    if m is None:
        raise ValueError(f"{shown(value)} is not an amount of memory; {MEMORY_HINT}")
    unit = (m["unit"] or "").upper().removesuffix("B")
    return int(float(m["n"]) * _UNITS[unit])


class TrainingResources(Strict):
    """What one training run needs: the Ray executor asks the cluster for it, the in-process
    executor refuses a run this machine cannot meet. Not part of the spec hash: where a run
    trains does not change what it trains."""
    cpus: float | None = Field(default=None, gt=0, description="CPU cores (Ray num_cpus; "
                               "default one per training process); also caps the torch "
                               "threads of the run's processes, which share them.")
    gpus: float | None = Field(default=None, ge=0, description="GPUs (Ray num_gpus); "
                               "fractions share one.")
    memory: int | str | None = Field(
        default=None, description="RAM for the run: bytes or a size such as 4GiB (Ray memory).")

    @field_validator("memory")
    @classmethod
    def _memory(cls, value: int | str | None) -> int | str | None:
        if value is not None and memory_bytes(value) <= 0:
            raise ValueError(
                f"memory must be more than 0 bytes (got {shown(value)}); {MEMORY_HINT}")
        return value

    @property
    def memory_bytes(self) -> int | None:
        return None if self.memory is None else memory_bytes(self.memory)


class TrainingSpec(Strict):
    """How the adapter is trained (transformers + peft + trl)."""
    objective: Objective = Field(default=Objective.sft, description="What the loss is.")
    epochs: float = Field(
        default=1.0, gt=0, description="Passes over the data (ignored if max_steps)."
    )
    max_steps: int | None = Field(default=None, gt=0, description="Stop after this many steps.")
    learning_rate: float | Literal["auto"] = Field(
        default="auto", description="A number, or auto: chosen by method, model and data size."
    )
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = Field(
        default="linear", description="Learning-rate schedule after the warmup.")
    warmup_ratio: float = Field(default=0.0, ge=0, lt=1, description="Share of steps warming up.")
    weight_decay: float = Field(default=0.0, ge=0, description="The optimizer's weight decay.")
    max_grad_norm: float = Field(default=1.0, gt=0, description="Gradient clipping norm.")
    batch_size: int = Field(default=8, gt=0, description="Examples per device step.")
    gradient_accumulation_steps: int = Field(
        default=1, gt=0, description="Steps per update; effective batch = batch_size x this.")
    max_seq_length: int = Field(default=512, gt=0, description="Tokens per example (truncated).")
    packing: bool = Field(default=False, description="Pack short examples into full sequences.")
    seed: int = Field(default=42, description="Same recipe, data and seed: same adapter bytes.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        default="auto", description="auto: fp32 on CPU (bf16 is 7-25x slower there), bf16 on CUDA."
    )
    gradient_checkpointing: bool | Literal["auto"] = Field(
        default="auto", description="auto: off on CPU, on for large models on CUDA."
    )
    eval_every_steps: int | None = Field(default=None, gt=0, description="Validate every N steps.")
    early_stopping: EarlyStopping | None = None
    checkpoint_every_steps: int = Field(
        default=50, gt=0, description="Resumable checkpoint period."
    )
    keep_checkpoints: int = Field(default=2, gt=0, description="How many checkpoints to keep.")
    dpo: DPOSpec = Field(default_factory=DPOSpec)
    grpo: GRPOSpec = Field(default_factory=GRPOSpec)
    ewc: EWCSpec | None = Field(default=None, description="Elastic weight consolidation penalty.")
    distributed: DistributedSpec = Field(
        default_factory=DistributedSpec,
        description="{nproc_per_node: N}: train with N processes (torchrun, DDP); objectives "
        "sft and cpt only for now.")
    report_to: Tracker | list[Tracker] = Field(
        default_factory=list,
        description="Experiment trackers the trainer logs to (transformers' report_to): "
        "mlflow, tensorboard, or a list of both; none by default. Settings come from the "
        "environment (MLFLOW_TRACKING_URI, MLFLOW_EXPERIMENT_NAME); TensorBoard writes under "
        "the run's workdir. Not part of the spec hash: turning tracking on does not retrain.",
    )

    resources: TrainingResources | None = Field(
        default=None, description="{cpus, gpus, memory} one run needs: requested from Ray "
        "(REG_TRAINING_EXECUTOR=ray), checked against this machine in process. Not part of "
        "the spec hash.")

    @field_validator("report_to", mode="before")
    @classmethod
    def _known_trackers(cls, value: object) -> object:
        # Before the type check, so a bad value gets one message with the fix instead of
        # pydantic's two (one per member of the union).
        names = value if isinstance(value, list) else [value]
        unknown = [n for n in names if n not in TRACKERS]
        fix = "use mlflow, tensorboard or a list of them ([mlflow, tensorboard]), or leave it out"
        if unknown or not isinstance(value, list | str):
            raise ValueError(f"not a tracker reg logs to: {', '.join(map(repr, unknown))}; {fix}")
        if len(set(names)) < len(names):
            raise ValueError(f"a tracker is named twice: {', '.join(map(str, names))}; "
                             "name each once")
        return value

    @property
    def trackers(self) -> tuple[Tracker, ...]:
        """``report_to`` as a tuple, whether the recipe wrote one name or a list."""
        return (self.report_to,) if isinstance(self.report_to, str) else tuple(self.report_to)



# What a run of several processes supports so far: these are the trainers whose DDP path the
# tests run (reg's lean Trainer). trl's DPO, reward and GRPO trainers, 4/8-bit bases, EWC,
# early stopping and experiment trackers are refused with distributed until tested.
DISTRIBUTED_OBJECTIVES = ("sft", "cpt")


def distributed_problems(t: TrainingSpec, *, quantized: bool) -> list[TrainingProblem]:
    """What ``training.distributed`` cannot be combined with yet. Pure."""
    n = t.distributed.nproc_per_node
    if n == 1:
        return []
    why = f"not supported with training.distributed (nproc_per_node {n}) yet"
    fix = "; remove it, or set training.distributed.nproc_per_node: 1"
    out: list[TrainingProblem] = []
    if t.objective.value not in DISTRIBUTED_OBJECTIVES:
        out.append(("training.distributed.nproc_per_node",
                    f"objective {t.objective.value} is {why}: several processes train "
                    f"objectives {' and '.join(DISTRIBUTED_OBJECTIVES)} only; set "
                    "nproc_per_node: 1 (or leave training.distributed out)", n))
    if quantized:
        out.append(("base_model.quantization", f"a 4/8-bit base (bitsandbytes) is {why}{fix}",
                    "set"))
    if t.ewc is not None:
        out.append(("training.ewc", f"EWC is {why}{fix}", "set"))
    if t.early_stopping is not None:
        out.append(("training.early_stopping", f"early stopping is {why}{fix}", "set"))
    if t.trackers:
        out.append(("training.report_to", f"experiment tracking is {why}{fix}",
                    ", ".join(t.trackers)))
    r = t.resources
    if r is not None and r.gpus and r.gpus < n:
        out.append(("training.resources.gpus", f"asks for {r.gpus:g} GPUs for {n} processes, "
                    f"each on a GPU of its own: set gpus: {n}, or nproc_per_node to the GPUs",
                    r.gpus))
    elif r is not None and not r.gpus and r.cpus is not None and r.cpus < n:
        out.append(("training.resources.cpus", f"asks for {r.cpus:g} CPUs for {n} processes, "
                    f"each on a core of its own: set cpus: {n} or more, or nproc_per_node to "
                    "the cores", r.cpus))
    return out


# (dotted field under spec., message with the fix, the value got)
TrainingProblem = tuple[str, str, object]
# Gates that read a causal LM's loss or its generations: they cannot judge a reward model.
LM_GATES = ("max_perplexity", "max_eval_loss", "min_improvement_vs_base", "min_exact_match",
            "min_contains", "min_rouge_l", "max_general_regression")
# The PEFT methods that wrap a sequence-classification model (its score head saved with it).
REWARD_METHODS = ("lora", "qlora", "dora")


def rl_problems(t: TrainingSpec, *, method: str, deploy_target: str, general: bool,
                gates_set: set[str]) -> list[TrainingProblem]:
    """The cross-field rules of objectives reward and grpo. Pure."""
    out: list[TrainingProblem] = []
    if t.objective in (Objective.reward, Objective.grpo):
        if t.packing:
            out.append(("training.packing",
                        f"packing is not supported with objective {t.objective.value}", True))
        if t.ewc is not None:
            out.append(("training.ewc", f"EWC is not supported with objective "
                        f"{t.objective.value}; remove training.ewc", "set"))
    if t.objective is Objective.reward:
        if deploy_target != "none":
            out.append(("deploy.target", "a reward model scores answers for GRPO; it is not "
                        "a chat adapter to serve: set deploy.target: none", deploy_target))
        if method not in REWARD_METHODS:
            out.append(("adapter.method", "objective reward trains a LoRA adapter on a "
                        "sequence-classification head: use lora, qlora or dora", method))
        if general:
            out.append(("evaluation.general", "a reward model has no perplexity to compare; "
                        "remove evaluation.general", "set"))
        for gate in sorted(gates_set & set(LM_GATES)):
            out.append((f"evaluation.gates.{gate}", "this gate reads a language model's loss "
                        "or answers; a reward model is judged by min_pairwise_accuracy", gate))
    if "min_pairwise_accuracy" in gates_set and t.objective not in (Objective.reward,
                                                                     Objective.dpo):
        out.append(("evaluation.gates.min_pairwise_accuracy", "ranks preference pairs: it "
                    "needs objective reward or dpo", t.objective.value))
    if t.objective is Objective.grpo:
        g = t.grpo
        if not g.rewards:
            out.append(("training.grpo.rewards", "objective grpo needs at least one reward, "
                        "e.g. rewards: [{contains: 'thank you'}] or [{model: NAME:production}]",
                        "[]"))
        per_step = t.batch_size * t.gradient_accumulation_steps
        if per_step % g.num_generations:
            out.append(("training.grpo.num_generations",
                        f"batch_size x gradient_accumulation_steps ({per_step}) must be a "
                        f"multiple of num_generations; set training.batch_size to "
                        f"{g.num_generations} (or a multiple)", g.num_generations))
    elif t.grpo != GRPOSpec():  # defaults written out (a dumped recipe) are not a setting
        out.append(("training.grpo", f"training.grpo is read by objective grpo only (this "
                    f"recipe's is {t.objective.value}); remove it or set objective: grpo", "set"))
    return out
