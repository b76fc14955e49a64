"""Every relative link of the README and docs/ leads somewhere: the file exists and, for a
`#fragment` into Markdown, the heading (GitHub's anchor for it) or `<a id>` does too.
Code blocks and inline code are not links."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support.paths import REPO

LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = "```"


def prose_lines(path: Path) -> list[tuple[int, str]]:
    """The lines outside fenced code, with inline code removed."""
    out: list[tuple[int, str]] = []
    fenced = False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.lstrip().startswith(FENCE):
            fenced = not fenced
        elif not fenced:
            out.append((number, re.sub(r"`[^`]*`", "", line)))
    return out


def github_anchor(heading: str) -> str:
    """GitHub's id for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.strip().lower().replace("`", "")
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    fenced = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith(FENCE):
            fenced = not fenced
            continue
        if fenced:
            continue
        if m := re.match(r"^#{1,6} (.*)", line):
            found.add(github_anchor(m.group(1)))
        found |= set(re.findall(r'<a id="([^"]+)"', line))
    return found


def documents() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def broken_links(path: Path, root: Path = REPO) -> list[str]:
    """``FILE:LINE: TARGET: what is wrong``, for each link of ``path`` that leads nowhere."""
    out: list[str] = []
    for number, line in prose_lines(path):
        for target in LINK.findall(line):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, mailto:, ...
                continue
            file, _, fragment = target.partition("#")
            dest = (path.parent / file).resolve() if file else path
            if not dest.exists():
                out.append(f"{path.relative_to(root)}:{number}: {target}: no such file")
            elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
                out.append(f"{path.relative_to(root)}:{number}: {target}: no such heading")
    return out


@pytest.mark.parametrize("path", documents(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(path: Path) -> None:
    assert broken_links(path) == []


def test_a_broken_link_and_a_missing_heading_are_found(tmp_path: Path) -> None:
    (tmp_path / "there.md").write_text("# A `code` heading, here\n\n<a id=\"spot\"></a>\n")
    page = tmp_path / "page.md"
    page.write_text("[ok](there.md#a-code-heading-here) [ok](there.md#spot) `[no](x.md)`\n"
                    "[gone](missing.md) [bad](there.md#nowhere) [web](https://example.com)\n"
                    "```\n[in code](missing.md)\n```\n")
    assert broken_links(page, tmp_path) == ["page.md:2: missing.md: no such file",
                                            "page.md:2: there.md#nowhere: no such heading"]
