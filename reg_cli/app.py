"""The `reg` typer app: one module per noun, each adding its commands.

Heavy libraries (torch, transformers, peft, trl, vllm) are imported inside the
commands that need them, so registry commands start in a fraction of a second.
"""

from __future__ import annotations

import typer

from reg_cli import (
    data_cmd,
    db_cmd,
    doctor_cmd,
    drift_cmd,
    eval_cmd,
    events_cmd,
    export_cmd,
    fault_cmd,
    models_cmd,
    recipes_cmd,
    reconcile_cmd,
    rollout_cmd,
    runs_cmd,
    serve_cmd,
    stages_cmd,
    status_cmd,
    train_cmd,
    versions_cmd,
)

app = typer.Typer(
    name="reg",
    help="Declarative model registry and deployment manager for fine-tuned LLMs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# In the order `reg --help` lists them.
for module in (recipes_cmd, data_cmd, train_cmd, versions_cmd, models_cmd, stages_cmd,
               runs_cmd, events_cmd, eval_cmd, export_cmd, db_cmd, reconcile_cmd, rollout_cmd,
               serve_cmd, status_cmd, doctor_cmd, fault_cmd, drift_cmd):
    module.register(app)
