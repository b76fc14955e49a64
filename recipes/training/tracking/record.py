"""What reg keeps of a run's trackers, and the names it gives them. Pure: no tracker is
imported here (validation and `reg show` use this module; neither may pay for mlflow).

The record is the ``tracking`` entry of an artifact's manifest (written once, by
:mod:`recipes.training.entry`, read by `reg show` and the registration's tagging), and the
same JSON in ``<workdir>/tracking.json`` while the run is under way (a resumed attempt
reattaches to its MLflow run).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, ValidationError

from recipes.core.names import adapter_name

TRACKING_EXTRA = "pip install 'reg[tracking]'"
TENSORBOARD_DIR = "tensorboard"  # under the run's workdir
WORKDIR_FILE = "tracking.json"
MANIFEST_KEY = "tracking"

# The module each tracker needs (transformers' TensorBoardCallback writes through
# torch.utils.tensorboard, which needs the tensorboard package).
TRACKER_MODULES = {"mlflow": "mlflow", "tensorboard": "tensorboard"}

# Tags reg sets on an MLflow run: what was trained (at the start), what it became (after
# registration). Searchable in the MLflow UI: tags.`reg.version_ref` = 'support-bot@v3'.
TAG_MODEL = "reg.model"
TAG_SPEC_HASH = "reg.spec_hash"
TAG_DIGEST = "reg.artifact_digest"
TAG_VERSION = "reg.version"
TAG_VERSION_REF = "reg.version_ref"
TAG_STATUS = "reg.status"


def missing_trackers(trackers: Iterable[str]) -> list[str]:
    """The trackers named whose package cannot be imported here."""
    return [t for t in trackers if importlib.util.find_spec(TRACKER_MODULES[t]) is None]


def tracker_problem(trackers: Iterable[str]) -> str | None:
    """Why ``training.report_to`` cannot work in this environment, or None."""
    missing = missing_trackers(trackers)
    if not missing:
        return None
    return (f"training.report_to names {', '.join(missing)}, which is not installed here "
            f"(the reg[tracking] extra)")


class _Record(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class MlflowRun(_Record):
    """Where an MLflow run lives: enough to open it in the UI or with MlflowClient."""

    tracking_uri: str  # without any user:password part (public_uri)
    experiment_id: str
    run_id: str
    run_name: str = ""

    @property
    def url(self) -> str:
        """The MLflow UI's link for an http(s) server; otherwise the URI and the ids."""
        if self.tracking_uri.startswith(("http://", "https://")):
            return (f"{self.tracking_uri.rstrip('/')}/#/experiments/{self.experiment_id}"
                    f"/runs/{self.run_id}")
        return f"{self.tracking_uri} (experiment {self.experiment_id}, run {self.run_id})"


class TrackingRecord(_Record):
    """The trackers one training run reported to."""

    mlflow: MlflowRun | None = None
    tensorboard_dir: str | None = None

    @property
    def empty(self) -> bool:
        return self.mlflow is None and self.tensorboard_dir is None

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)

    @classmethod
    def parse(cls, value: Any) -> TrackingRecord | None:
        """A stored record, or None when there is none or it is not one this code reads."""
        if not isinstance(value, Mapping):
            return None
        try:
            record = cls.model_validate(value)
        except ValidationError:
            return None
        return None if record.empty else record

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> TrackingRecord | None:
        return cls.parse(manifest.get(MANIFEST_KEY))

    def links(self) -> list[tuple[str, str]]:
        """``(label, where)`` rows for `reg show`."""
        rows: list[tuple[str, str]] = []
        if self.mlflow is not None:
            rows.append(("mlflow run", self.mlflow.url))
        if self.tensorboard_dir is not None:
            rows.append(("tensorboard", f"tensorboard --logdir {self.tensorboard_dir}"))
        return rows


def public_uri(uri: str) -> str:
    """``uri`` without a ``user:password@`` part: what reg stores and prints."""
    parts = urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port is not None else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def run_name(model: str, spec_hash: str) -> str:
    """The MLflow run's name: the model and the start of its spec hash."""
    return f"{model}-{spec_hash.removeprefix('sha256:')[:12]}"


def start_tags(model: str, spec_hash: str) -> dict[str, str]:
    return {TAG_MODEL: model, TAG_SPEC_HASH: spec_hash}


def version_tags(model: str, number: int, digest: str | None, status: str) -> dict[str, str]:
    """What registration adds to the run: the version it became."""
    tags = {TAG_MODEL: model, TAG_VERSION: f"v{number}",
            TAG_VERSION_REF: adapter_name(model, number), TAG_STATUS: status}
    if digest:
        tags[TAG_DIGEST] = digest
    return tags
