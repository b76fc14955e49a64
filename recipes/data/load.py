"""Read data files with ``datasets`` and map each row format to one internal form.

Internal forms (see :class:`Example`): a chat (``messages`` with roles), a
preference triple (``messages`` is the prompt, plus ``chosen`` / ``rejected``
answers), or raw ``text``. Every example remembers its file and 1-based row so
later errors can point at it. Files are local only: jsonl, json, csv, parquet.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from recipes.core.errors import DataError
from recipes.schema import DataFormat, FieldMap

Kind = Literal["chat", "preference", "text"]
Message = dict[str, str]

BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
ROLES = ("system", "user", "assistant")
# ShareGPT exports name roles in several ways; these are the common spellings.
SHAREGPT_ROLES = {
    "system": "system", "human": "user", "user": "user", "gpt": "assistant",
    "assistant": "assistant", "model": "assistant", "bot": "assistant", "chatgpt": "assistant",
}
MAX_ROW_ERRORS = 20


def kind_of(fmt: DataFormat) -> Kind:
    if fmt is DataFormat.dpo_pairs:
        return "preference"
    if fmt is DataFormat.text:
        return "text"
    return "chat"


@dataclass
class Example:
    """One example in internal form; ``file`` and ``row`` (1-based) locate it for errors."""

    kind: Kind
    source: str
    file: str
    row: int
    messages: list[Message] = field(default_factory=list)
    chosen: str = ""
    rejected: str = ""
    text: str = ""

    @property
    def where(self) -> str:
        return f"{self.file} row {self.row}"

    def content(self) -> dict[str, Any]:
        """What the example says, without where it came from (hashed for ids and dedupe)."""
        if self.kind == "chat":
            return {"messages": self.messages}
        if self.kind == "preference":
            return {"prompt": self.messages, "chosen": self.chosen, "rejected": self.rejected}
        return {"text": self.text}


@dataclass
class RowErrors:
    """Problems in a file's rows, gathered so one run reports many at once."""

    file: str
    messages: list[str] = field(default_factory=list)
    count: int = 0

    def add(self, row: int, message: str) -> None:
        self.count += 1
        if len(self.messages) < MAX_ROW_ERRORS:
            self.messages.append(f"{self.file} row {row}: {message}")

    def raise_if_any(self, fmt: DataFormat) -> None:
        if not self.count:
            return
        more = self.count - len(self.messages)
        text = "\n".join(self.messages) + (f"\n... and {more} more" if more > 0 else "")
        raise DataError(
            f"{self.count} bad row(s) in {self.file} (format {fmt.value}):\n{text}",
            hint=f"fix the rows, or map your column names with data.fields (format "
            f"{fmt.value} reads {', '.join(FORMAT_FIELDS[fmt])})",
        )


FORMAT_FIELDS: dict[DataFormat, tuple[str, ...]] = {
    DataFormat.alpaca: ("instruction", "input", "output"),
    DataFormat.sharegpt: ("conversations",),
    DataFormat.openai_chat: ("messages",),
    DataFormat.dpo_pairs: ("prompt", "chosen", "rejected"),
    DataFormat.text: ("text",),
}


def read_rows(path: Path, shown: str) -> list[dict[str, Any]]:
    """Every row of a local data file, as dicts. ``shown`` names the file in errors."""
    builder = BUILDERS.get(path.suffix.lower())
    if builder is None:
        raise DataError(f"unsupported data file type: {shown}",
                        hint=f"use one of {', '.join(BUILDERS)}")
    if not path.is_file():
        raise DataError(f"data file not found: {shown}",
                        hint="check the path; it is relative to the recipe file")
    if _blank(path):  # datasets fails on these with unhelpful messages; no rows is the truth
        return []
    import datasets

    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        # A throwaway cache: datasets would otherwise keep an Arrow copy of
        # every file version under ~/.cache, forever.
        with tempfile.TemporaryDirectory(prefix="reg-data-") as cache:
            ds = datasets.load_dataset(
                builder, data_files=str(path), split="train", cache_dir=cache,
                keep_in_memory=True,
            )
            rows: list[dict[str, Any]] = ds.to_list()
    except Exception as e:  # datasets and pyarrow raise many types for a bad file
        raise DataError(
            f"cannot read {shown}: {_json_problem(path, builder) or _first_line(e)}",
            hint="check that the file is valid " + (
                "JSON Lines (one object per line)" if builder == "json" else builder.upper()),
        ) from e
    finally:
        if bars:
            datasets.enable_progress_bars()
    return rows


def _blank(path: Path) -> bool:
    """True when the file holds nothing but whitespace (read until the first other byte)."""
    with path.open("rb") as f:
        while chunk := f.read(1 << 16):
            if chunk.strip():
                return False
    return True


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _json_problem(path: Path, builder: str) -> str | None:
    """For JSON Lines, the first bad line and why: pyarrow's own message has no line number."""
    if builder != "json" or path.suffix.lower() != ".jsonl":
        return None
    try:
        with path.open(encoding="utf-8") as f:
            for n, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    value = json.loads(line)
                except json.JSONDecodeError as e:
                    return f"line {n}: invalid JSON: {e.msg} (column {e.colno})"
                if not isinstance(value, dict):
                    return f"line {n}: expected a JSON object, got {type(value).__name__}"
    except UnicodeDecodeError as e:
        return f"not UTF-8 text ({e.reason} at byte {e.start})"
    return None


# --- one mapper per format: raw row -> Example, or an error message -------------------


class RowProblem(Exception):
    """A row does not fit its format; the message names the field."""


def _text(row: Mapping[str, Any], name: str, *, required: bool = True) -> str:
    value = row.get(name)
    if value is None:
        if required:
            raise RowProblem(f"missing field '{name}'")
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise RowProblem(f"field '{name}' must be text (got {type(value).__name__})")
    return str(value)


def _json_list(value: Any, name: str) -> list[Any]:
    # csv and parquet hold nested lists as JSON strings.
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise RowProblem(f"field '{name}' is not a list of messages: {e.msg}") from e
    if not isinstance(value, list):
        raise RowProblem(f"field '{name}' must be a list of messages (got {type(value).__name__})")
    return value


def _messages(row: Mapping[str, Any], name: str, role_key: str, content_key: str,
              roles: Mapping[str, str]) -> list[Message]:
    if row.get(name) is None:
        raise RowProblem(f"missing field '{name}'")
    out: list[Message] = []
    for i, item in enumerate(_json_list(row[name], name)):
        if not isinstance(item, dict):
            raise RowProblem(f"{name}[{i}] must be an object with '{role_key}' and "
                             f"'{content_key}'")
        role, content = item.get(role_key), item.get(content_key)
        if role is None and "role" in item:  # sharegpt files written the OpenAI way
            role, content = item.get("role"), item.get("content")
        if not isinstance(role, str) or role.lower() not in roles:
            raise RowProblem(f"{name}[{i}].{role_key} must be one of "
                             f"{', '.join(sorted(roles))} (got {role!r})")
        if not isinstance(content, str):
            raise RowProblem(f"{name}[{i}].{content_key} must be text (got {content!r})")
        out.append({"role": roles[role.lower()], "content": content})
    if not out:
        raise RowProblem(f"field '{name}' is an empty conversation")
    if not any(m["role"] == "assistant" for m in out):
        raise RowProblem(f"field '{name}' has no assistant message to learn from")
    return out


def _with_system(messages: list[Message], system: str) -> list[Message]:
    if not system or (messages and messages[0]["role"] == "system"):
        return messages
    return [{"role": "system", "content": system}, *messages]


def _answer(value: Any, name: str) -> str:
    """A chosen/rejected answer: text, one message, or a list ending with the assistant's."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return str(value["content"])
    if isinstance(value, list) and value:
        last = value[-1]
        if isinstance(last, dict) and last.get("role", "assistant") == "assistant" and isinstance(
            last.get("content"), str
        ):
            return str(last["content"])
    if value is None:
        raise RowProblem(f"missing field '{name}'")
    raise RowProblem(f"field '{name}' must be text or an assistant message")


def map_row(row: Mapping[str, Any], fmt: DataFormat, f: FieldMap, system_prompt: str) -> dict[
    str, Any
]:
    """One raw row as internal fields (messages / chosen / rejected / text). Raises RowProblem."""
    system = _text(row, f.system, required=False) or system_prompt
    if fmt is DataFormat.alpaca:
        instruction = _text(row, f.instruction)
        extra = _text(row, f.input, required=False)
        user = f"{instruction}\n\n{extra}" if extra.strip() else instruction
        msgs = [{"role": "user", "content": user},
                {"role": "assistant", "content": _text(row, f.output)}]
        return {"messages": _with_system(msgs, system)}
    if fmt is DataFormat.openai_chat:
        msgs = _messages(row, f.messages, "role", "content", {r: r for r in ROLES})
        return {"messages": _with_system(msgs, system)}
    if fmt is DataFormat.sharegpt:
        msgs = _messages(row, f.conversations, "from", "value", SHAREGPT_ROLES)
        return {"messages": _with_system(msgs, system)}
    if fmt is DataFormat.dpo_pairs:
        raw = row.get(f.prompt)
        if isinstance(raw, list) or (isinstance(raw, str) and raw.lstrip().startswith("[{")):
            prompt = _prompt_messages(raw, f.prompt)
        else:
            prompt = [{"role": "user", "content": _text(row, f.prompt)}]
        return {
            "messages": _with_system(prompt, system),
            "chosen": _answer(row.get(f.chosen), f.chosen),
            "rejected": _answer(row.get(f.rejected), f.rejected),
        }
    return {"text": _text(row, f.text)}


def _prompt_messages(raw: Any, name: str) -> list[Message]:
    out: list[Message] = []
    for i, item in enumerate(_json_list(raw, name)):
        role = item.get("role") if isinstance(item, dict) else None
        content = item.get("content") if isinstance(item, dict) else None
        if role not in ROLES or not isinstance(content, str):
            raise RowProblem(f"{name}[{i}] must be {{'role': system|user|assistant, "
                             f"'content': text}}")
        out.append({"role": str(role), "content": content})
    if not out or out[-1]["role"] != "user":
        raise RowProblem(f"field '{name}' must end with the user's message")
    return out


def load_examples(
    path: Path, shown: str, *, fmt: DataFormat, fields: FieldMap, source: str,
    system_prompt: str = "", read: Callable[[Path, str], list[dict[str, Any]]] = read_rows,
) -> list[Example]:
    """Every row of one file as :class:`Example`; bad rows raise one DataError listing them."""
    rows = read(path, shown)
    kind = kind_of(fmt)
    errors = RowErrors(shown)
    out: list[Example] = []
    for i, row in enumerate(rows, start=1):
        try:
            mapped = map_row(row, fmt, fields, system_prompt)
        except RowProblem as e:
            errors.add(i, str(e))
            continue
        out.append(Example(kind=kind, source=source, file=shown, row=i, **mapped))
    errors.raise_if_any(fmt)
    return out
