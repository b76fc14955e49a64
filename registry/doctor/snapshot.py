"""What `reg doctor` looks at, gathered once (:mod:`registry.doctor.gather`) and judged by
pure checks (:mod:`registry.doctor.checks`).

Each part records facts as they are, not verdicts: the recipe as the loader validated it,
the data statistics the last trained version's data report recorded, the evaluation
records of the model's registered versions, and what Prometheus says of its targets.
``None`` means "not known", which the checks word as such (a warning with the command
that would tell), never as a pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from recipes.evaluation.human.results import HumanEvalResult
    from recipes.evaluation.report import EvaluationReport
    from recipes.loading.recipe import LoadedRecipe
    from registry.doctor.drift import DriftFacts
    from registry.doctor.reeval import ReevalFacts


@dataclass(frozen=True)
class DataStats:
    """What a data report (``data_report.json``) recorded: a trained version's, or the one
    `reg data` last wrote in the workspace."""

    source: str  # for people: "v3's data report", "the `reg data` report of <time>"
    current: bool | None  # from the recipe's current spec hash; None: not known
    rows_read: int
    train: int  # examples per split after cleaning
    validation: int
    test: int
    removed: dict[str, int] = field(default_factory=dict)  # rows dropped, by reason
    pii_redacted: dict[str, int] = field(default_factory=dict)  # spans redacted, by kind


@dataclass(frozen=True)
class VersionRecord:
    """One registered version of the recipe's model, with its evaluation record."""

    number: int
    status: str
    method: str
    current: bool  # trained from the recipe's current spec hash
    report: EvaluationReport | None  # None: the version stored no readable metrics


@dataclass(frozen=True)
class RecipeState:
    """One valid recipe and what the workspace and the registry hold about its model."""

    loaded: LoadedRecipe
    num_params: int | None  # of the base model, from its safetensors headers
    versions: list[VersionRecord] = field(default_factory=list)  # oldest first
    data: DataStats | None = None  # from the newest version that stored a data report
    human_eval: HumanEvalResult | None = None  # the newest one of the newest ready version
    drift: DriftFacts | None = None  # the deployed versions' references (None: not read)
    reeval: ReevalFacts | None = None  # the deployed versions' newest `reg eval run`s

    @property
    def name(self) -> str:
        return self.loaded.name

    @property
    def latest(self) -> VersionRecord | None:
        return self.versions[-1] if self.versions else None

    @property
    def newest_ready(self) -> VersionRecord | None:
        """The version production would be given next: the newest ``ready`` one."""
        return next((v for v in reversed(self.versions) if v.status == "ready"), None)


@dataclass(frozen=True)
class InvalidRecipe:
    """A recipe file the loader refused: its first problem and how many there are."""

    path: str
    first_problem: str
    problems: int


@dataclass(frozen=True)
class Target:
    """One active Prometheus scrape target (``/api/v1/targets``)."""

    job: str
    url: str
    health: str  # up, down, unknown
    last_error: str = ""


@dataclass(frozen=True)
class Prometheus:
    """Prometheus as ``REG_PROMETHEUS_URL`` names it: its targets, or why it could not be read."""

    url: str | None  # None: REG_PROMETHEUS_URL is not set
    targets: list[Target] = field(default_factory=list)
    error: str = ""  # set when the API could not be read


@dataclass(frozen=True)
class Snapshot:
    """Everything the checks judge."""

    recipes_dir: str
    recipes: list[RecipeState]
    invalid: list[InvalidRecipe]
    prometheus: Prometheus
