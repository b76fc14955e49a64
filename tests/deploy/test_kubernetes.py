"""The Kubernetes manifests under deploy/kubernetes/ cannot rot unnoticed:

1. every object validates against the Kubernetes JSON schemas (kubernetes-validate ships
   them, strict: an unknown field is an error), on an old and the newest supported release;
2. every `reg` command line parses with reg's own CLI parser (commands, flags, values);
3. every environment variable is one reg reads, or one a library reg uses documents (found
   in that library's installed source), and the values given parse as reg's settings do;
4. what refers to something else finds it: ConfigMap/Secret keys, the Service's selector and
   port, the probes' routes, the Prometheus annotations, kustomization's resources.
"""

from __future__ import annotations

import ast
import copy
import importlib.util
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import typer
import yaml

from tests.support.paths import REPO

KUBE = REPO / "deploy" / "kubernetes"
REG_IMAGE = "reg"  # the image name the manifests use; kustomization.yaml's `images:` maps it
# Kinds that are CRDs, not Kubernetes' own: no schema ships for them.
CRD_KINDS = {"ServiceMonitor"}
# Files that are alternatives or examples, not applied by `kubectl apply -k`.
NOT_IN_KUSTOMIZATION = {
    "secret.example.yaml": "an example: the real Secret is created by hand",
    "serve-fleet.yaml": "replaces serve.yaml for several gateway replicas",
    "servicemonitor.yaml": "for clusters that run the Prometheus Operator",
}
# Variables of libraries reg runs, with the package whose source must name them.
THIRD_PARTY_ENV = {
    "AWS_ACCESS_KEY_ID": "botocore",  # s3fs's credentials for an s3:// artifact store
    "AWS_SECRET_ACCESS_KEY": "botocore",
    "HF_HUB_OFFLINE": "huggingface_hub",
    "VLLM_NO_USAGE_STATS": "vllm",
}
OS_ENV = {"HOME"}  # where torch, vLLM and Hugging Face keep their caches

Doc = dict[str, Any]


def manifests() -> list[Path]:
    return sorted(p for p in KUBE.glob("*.yaml") if p.name != "kustomization.yaml")


def documents(path: Path) -> list[Doc]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def all_documents() -> Iterator[tuple[str, Doc]]:
    for path in manifests():
        for doc in documents(path):
            yield path.name, doc


def find(kind: str, name: str, path: str | None = None) -> Doc:
    for file, doc in all_documents():
        if doc["kind"] == kind and doc["metadata"]["name"] == name and path in (None, file):
            return doc
    raise AssertionError(f"no {kind} {name} in deploy/kubernetes")


def pod_specs() -> Iterator[tuple[str, Doc]]:
    for file, doc in all_documents():
        if doc["kind"] in ("Deployment", "StatefulSet", "Job", "DaemonSet"):
            yield f"{file}: {doc['metadata']['name']}", doc["spec"]["template"]["spec"]


def containers() -> Iterator[tuple[str, Doc]]:
    for where, spec in pod_specs():
        for c in [*spec.get("initContainers", []), *spec["containers"]]:
            yield f"{where}/{c['name']}", c


def reg_containers() -> list[tuple[str, Doc]]:
    found = [(w, c) for w, c in containers() if c["image"] == REG_IMAGE]
    assert len(found) >= 3, "expected reg serve, the reconciler and the canary controller"
    return found


@pytest.mark.parametrize("version", ["1.30", kubernetes_validate.latest_version()])
def test_every_object_validates_against_the_kubernetes_schemas(version: str) -> None:
    checked = 0
    for file, doc in all_documents():
        if doc["kind"] in CRD_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{file}: {doc['kind']} {doc['metadata']['name']}: {e.message} "
                        f"at {'.'.join(map(str, e.path))}")
        checked += 1
    assert checked >= 9


def test_the_schemas_refuse_a_misspelt_field() -> None:
    deployment = copy.deepcopy(find("Deployment", "reg-serve", "serve.yaml"))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(deployment, "1.30", strict=True)


def test_kustomization_applies_every_file_but_the_alternatives() -> None:
    kustomization = yaml.safe_load((KUBE / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    files = {p.name for p in manifests()}
    assert listed <= files, f"listed but missing: {sorted(listed - files)}"
    assert files - listed == set(NOT_IN_KUSTOMIZATION)
    assert {i["name"] for i in kustomization["images"]} == {REG_IMAGE}
    names = {d["metadata"]["namespace"] for _, d in all_documents() if d["kind"] != "Namespace"}
    assert names == {kustomization["namespace"]}


def _parse_reg(args: list[str]) -> str:
    """Parse a `reg` command line with reg's own parser, as `reg` would (no command runs);
    returns the command's path. Unknown commands, flags or bad values raise."""
    from reg_cli.app import app

    cmd = typer.main.get_command(app)
    ctx = typer.Context(cmd, info_name="reg")
    rest = list(args)
    while isinstance(cmd, typer.core.TyperGroup):
        name = rest.pop(0)
        sub = cmd.get_command(ctx, name)
        assert sub is not None, f"reg has no command {ctx.command_path} {name}"
        cmd, ctx = sub, typer.Context(sub, info_name=name, parent=ctx)
    cmd.parse_args(ctx, rest)
    return ctx.command_path


def test_every_reg_command_line_parses_with_the_reg_cli() -> None:
    commands: dict[str, str] = {}
    for where, c in reg_containers():
        assert c["command"] == ["reg"], f"{where}: run the `reg` console script"
        commands[where] = _parse_reg([str(a) for a in c["args"]])
    assert sorted(set(commands.values())) == ["reg reconcile", "reg rollout run", "reg serve"]


def test_the_parser_refuses_a_flag_reg_does_not_have() -> None:
    with pytest.raises(typer.exceptions.TyperException, match="No such option: --replica-count"):
        _parse_reg(["serve", "--replica-count", "2"])
    with pytest.raises(typer.BadParameter, match="greater than or equal to 1"):
        _parse_reg(["reconcile", "recipes", "--watch", "--interval", "0.5"])


def _reg_env_names() -> set[str]:
    """Every REG_* name reg's code reads: the string literals of its packages and the env
    vars of its CLI options."""
    names: set[str] = set()
    for package in ("recipes", "registry", "rollout", "serving", "reg_cli"):
        for path in (REPO / package).rglob("*.py"):
            names |= set(re.findall(r"[\"'](REG_[A-Z0-9_]+)[\"']", path.read_text()))
    return names


def _package_source_names(package: str, name: str) -> bool:
    spec = importlib.util.find_spec(package)
    assert spec is not None and spec.submodule_search_locations, f"{package} is not installed"
    root = Path(next(iter(spec.submodule_search_locations)))
    return any(name in p.read_text(errors="replace") for p in root.rglob("*.py"))


def test_every_environment_variable_is_one_reg_or_its_libraries_read() -> None:
    known = _reg_env_names()
    assert {"REG_DATABASE_URL", "REG_ARTIFACT_STORE", "REG_ADMIN_TOKEN"} <= known
    for where, c in reg_containers():
        for var in c.get("env", []):
            name = var["name"]
            if name.startswith("REG_"):
                assert name in known, f"{where}: reg reads no {name}"
            elif name in THIRD_PARTY_ENV:
                package = THIRD_PARTY_ENV[name]
                assert _package_source_names(package, name), f"{package} reads no {name}"
            else:
                assert name in OS_ENV, f"{where}: {name} is neither reg's nor a library's"


def _key_values(kind: str, name: str) -> dict[str, str]:
    doc = find(kind, name)
    values: dict[str, str] = doc.get("data") or doc.get("stringData") or {}
    return values


def _resolved_env(c: Doc) -> dict[str, str]:
    """A container's environment with its ConfigMap and Secret references resolved (the
    Secret from secret.example.yaml); every reference must find its key."""
    env: dict[str, str] = {}
    for var in c.get("env", []):
        if "value" in var:
            env[var["name"]] = str(var["value"])
            continue
        ref = var["valueFrom"]
        kind, key_ref = (("ConfigMap", ref["configMapKeyRef"]) if "configMapKeyRef" in ref
                         else ("Secret", ref["secretKeyRef"]))
        values = _key_values(kind, key_ref["name"])
        assert key_ref["key"] in values, f"{kind} {key_ref['name']} has no key {key_ref['key']}"
        env[var["name"]] = values[key_ref["key"]]
    return env


def test_the_settings_given_parse_as_reg_reads_them() -> None:
    from reg_cli.reconcile_cmd import reconciler_settings
    from registry.settings import Settings
    from serving.config import ServeConfig

    for where, c in reg_containers():
        env = _resolved_env(c)
        settings = Settings.from_env(env)
        assert settings.database_url.startswith("postgresql+psycopg://"), where
        assert settings.artifact_store.startswith("s3://"), where
        assert settings.home == Path("/var/lib/reg"), where
        ServeConfig.from_env(env)
        if c["args"][0] == "reconcile":
            assert reconciler_settings(env)["lease_ttl_s"] == 60.0
    for _, c in containers():  # $(VAR) in args must name a variable of the container
        for var in re.findall(r"\$\((\w+)\)", " ".join(map(str, c.get("args", [])))):
            assert var in _resolved_env(c), f"{c['name']}: $({var}) is not set"


def _gateway_routes() -> set[str]:
    tree = ast.parse((REPO / "serving" / "gateway" / "app.py").read_text())
    return {str(d.args[0].value) for node in ast.walk(tree)
            if isinstance(node, ast.AsyncFunctionDef) for d in node.decorator_list
            if isinstance(d, ast.Call) and isinstance(d.func, ast.Attribute)
            and d.func.attr == "get" and d.args and isinstance(d.args[0], ast.Constant)}


@pytest.mark.parametrize("file", ["serve.yaml", "serve-fleet.yaml"])
def test_serve_probes_ports_service_and_scrape_annotations_agree(file: str) -> None:
    deployment = find("Deployment", "reg-serve", file)
    template = deployment["spec"]["template"]
    gateway = next(c for c in template["spec"]["containers"] if c["args"][0] == "serve")
    args = [str(a) for a in gateway["args"]]
    port = int(args[args.index("--port") + 1])
    assert args[args.index("--host") + 1] == "0.0.0.0"  # reachable from the Service
    assert {"name": "http", "containerPort": port} in gateway["ports"]
    routes = _gateway_routes()
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/ready" in routes
    assert gateway["livenessProbe"]["httpGet"]["path"] == "/health" in routes
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(port)
    assert annotations["prometheus.io/path"] == "/metrics" in routes
    service = find("Service", "reg")
    labels = template["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    reconciler = find("Deployment", "reg-reconciler")["spec"]["template"]["metadata"]["labels"]
    assert not service["spec"]["selector"].items() <= reconciler.items()
    canary = [c for c in template["spec"]["containers"] if c["args"][:2] == ["rollout", "run"]]
    if "--no-controller" in args:  # then the controller runs beside it, on its loopback
        assert [_resolved_env(c)["REG_GATEWAY_URL"] for c in canary] == [
            f"http://127.0.0.1:{port}"]
    else:
        assert canary == []


def test_the_service_monitor_selects_the_gateway_service() -> None:
    monitor = find("ServiceMonitor", "reg")
    service = find("Service", "reg")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"][
        "labels"].items()
    endpoint = monitor["spec"]["endpoints"][0]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
