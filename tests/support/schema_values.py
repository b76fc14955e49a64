"""Values a JSON Schema admits, as a hypothesis strategy: the bad-input suite draws recipes
from the schema `reg schema` exports (``recipes.schema.json_schema``), then breaks them.

Written here rather than taken from hypothesis-jsonschema: its latest release (0.23.1)
fails on the hypothesis this project installs ("'many' object has no attribute 'more'").
The recipe schema uses a dozen keywords; any other keyword is an error here, so a schema
that grows one is never drawn from as if it did not.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

# Keywords that say nothing about which values are valid.
ANNOTATIONS = frozenset({"$schema", "title", "description", "default", "examples"})
ASSERTIONS = frozenset({
    "$defs", "$ref", "anyOf", "oneOf", "const", "enum", "type", "pattern", "minLength", "minimum",
    "maximum", "exclusiveMinimum", "exclusiveMaximum", "items", "minItems", "properties",
    "required", "additionalProperties",
})


def from_schema(schema: dict[str, Any], *, max_items: int = 3) -> st.SearchStrategy[Any]:
    """Every value ``schema`` admits (keys it does not require appear or not; lists hold at
    most ``max_items`` more than their minimum). Raises ValueError on a keyword it cannot
    honour."""
    defs: dict[str, Any] = schema.get("$defs", {})
    built: dict[str, st.SearchStrategy[Any]] = {}

    def ref(target: str) -> st.SearchStrategy[Any]:
        name = target.removeprefix("#/$defs/")
        if name == target or name not in defs:
            raise ValueError(f"cannot follow $ref {target!r}")
        if name not in built:
            built[name] = build(defs[name])
        return built[name]

    def build(node: dict[str, Any]) -> st.SearchStrategy[Any]:
        unknown = set(node) - ANNOTATIONS - ASSERTIONS
        if unknown:
            raise ValueError(f"keywords not drawn from: {sorted(unknown)} in {node}")
        if "$ref" in node:
            return ref(node["$ref"])
        if "anyOf" in node:
            return st.one_of([build(n) for n in node["anyOf"]])
        if "oneOf" in node:
            # Drawn as anyOf: the recipe's oneOf (training.grpo.rewards) has members that each
            # require their own key and forbid the others', so a value fits exactly one.
            return st.one_of([build(n) for n in node["oneOf"]])
        if "const" in node:
            return st.just(node["const"])
        if "enum" in node:
            return st.sampled_from(node["enum"])
        kind = node.get("type")
        if kind == "string":
            if "pattern" in node:
                return st.from_regex(node["pattern"], fullmatch=True)
            return st.text(min_size=node.get("minLength", 0), max_size=24)
        if kind == "integer":
            low = node.get("minimum", node.get("exclusiveMinimum", -(2**40) - 1) + 1)
            high = node.get("maximum", node.get("exclusiveMaximum", 2**40 + 1) - 1)
            return st.integers(low, high)
        if kind == "number":
            return st.floats(
                min_value=node.get("minimum", node.get("exclusiveMinimum", -1e12)),
                max_value=node.get("maximum", node.get("exclusiveMaximum", 1e12)),
                exclude_min="exclusiveMinimum" in node, exclude_max="exclusiveMaximum" in node,
                allow_nan=False, allow_infinity=False)
        if kind == "boolean":
            return st.booleans()
        if kind == "null":
            return st.none()
        if kind == "array":
            least = node.get("minItems", 0)
            return st.lists(build(node.get("items", {"type": "string"})), min_size=least,
                            max_size=least + max_items)
        if kind == "object":
            return obj(node)
        raise ValueError(f"cannot draw from {node}")

    def obj(node: dict[str, Any]) -> st.SearchStrategy[Any]:
        props: dict[str, Any] = node.get("properties", {})
        required = set(node.get("required", []))
        fixed = st.fixed_dictionaries(
            {k: build(v) for k, v in props.items() if k in required},
            optional={k: build(v) for k, v in props.items() if k not in required})
        extra = node.get("additionalProperties", True)
        if extra is False:
            return fixed
        if not isinstance(extra, dict) or props:
            raise ValueError(f"cannot draw from additionalProperties {extra!r} beside "
                             f"properties {sorted(props)}")
        return st.dictionaries(st.text(min_size=1, max_size=8), build(extra),
                               max_size=max_items)

    return build({k: v for k, v in schema.items() if k != "$defs"})
