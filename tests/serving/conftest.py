"""Fixtures of the serving tests: OpenAI's schemas, and the live stack's registry under
the name ``registry`` with a tampered version of it.

The live stack itself (``stack``, ``trained_adapters``, ``reg_home``, ``live_registry``:
ONE real vLLM engine per session) lies in tests/support/live_fixtures.py, registered by
tests/conftest.py, so the reliability suite shares the same engine.
What tests import (names, helpers, the served app) lies in tests/support/.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from registry.api import Registry
from tests.support.live_stack import KEYWORDS

# The official OpenAI schemas (JSON Schema extracted from OpenAI's published OpenAPI
# spec), kept with the tests so they run from any checkout.
SCHEMAS = Path(os.environ.get(
    "REG_OPENAI_SCHEMAS", Path(__file__).resolve().parents[1] / "support" / "openai-schemas.json"))


@pytest.fixture(scope="session")
def openai_schemas() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(SCHEMAS.read_text())
    return data


@pytest.fixture(scope="session")
def validate_openai(openai_schemas: dict[str, Any]) -> Callable[[str, Any], None]:
    """Validate a body against one of OpenAI's schemas (raises jsonschema.ValidationError)."""
    import copy

    import jsonschema

    defs = openai_schemas["$defs"]
    # OpenAI's API itself streams completion chunks with "finish_reason": null until the
    # last one, but its published schema (shared by streamed and whole completions) allows
    # only a string there. The gateway passes null through, as OpenAI does, rather than
    # claim a finish early; so this one field, in stream chunks only, also accepts null.
    chunk_defs = copy.deepcopy(defs)
    finish = chunk_defs["CreateCompletionResponse"]["properties"]["choices"]["items"][
        "properties"]["finish_reason"]
    chunk_defs["CreateCompletionResponse"]["properties"]["choices"]["items"]["properties"][
        "finish_reason"] = {"anyOf": [finish, {"type": "null"}]}

    validators: dict[str, Any] = {}

    def check(name: str, body: Any) -> None:
        # One validator per schema, built once: jsonschema.validate() would re-check the whole
        # (large) schema document against the metaschema on every call.
        v = validators.get(name)
        if v is None:
            use = chunk_defs if name == "CompletionStreamChunk" else defs
            ref = "CreateCompletionResponse" if name == "CompletionStreamChunk" else name
            schema = {"$defs": use, "$ref": f"#/$defs/{ref}"}
            jsonschema.Draft202012Validator.check_schema(schema)
            v = validators[name] = jsonschema.Draft202012Validator(schema)
        error = jsonschema.exceptions.best_match(v.iter_errors(body))
        if error is not None:
            raise error

    return check


@pytest.fixture(scope="session")
def registry(live_registry: Registry) -> Registry:
    """The live stack's registry (tests/support/live_fixtures.py), under the name the
    serving tests use (the name tests/conftest.py gives a fresh registry elsewhere)."""
    return live_registry


@pytest.fixture(scope="session")
def tampered_version(registry: Registry, trained_adapters: dict[int, Path],
                     tmp_path_factory: pytest.TempPathFactory) -> int:
    """support-bot v3: v2's weights with probe answers altered before registering (and a
    new spec hash, so it is a version of its own): the engine cannot match them."""
    import shutil

    from recipes.artifact import verify_manifest, write_manifest
    from recipes.evaluation.probes import read_probes, write_probes

    root = tmp_path_factory.mktemp("tampered") / "artifact"
    shutil.copytree(trained_adapters[2], root)
    identity = dict(verify_manifest(root)["identity"])
    identity["spec_hash"] = str(identity["spec_hash"]) + "-tampered"
    probes = read_probes(root)
    assert probes is not None, "training records probes.json"
    write_probes(root, probes.model_copy(update={"probes": [
        p.model_copy(update={"answer": p.answer.replace(KEYWORDS[2], "charlie")})
        for p in probes.probes]}))
    (root / "manifest.json").unlink()
    write_manifest(root, identity)
    return registry.register(root).version.number
