"""GitOps lineage: the commit a recipe came from and whether its files were dirty.

Uses the ``git`` command rather than a library (GitPython, dulwich): it is
what the user's repository is managed with, so it reads every repository
feature (worktrees, sparse checkouts, hooks-free status) exactly as the user
sees it, and it adds no dependency. One ``git status`` per repository and
pass, not per recipe, keeps 1,000 recipes fast.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from rollout.gitops.state import GitInfo

_TIMEOUT_S = 30


@functools.cache
def _git_exe() -> str | None:
    return shutil.which("git")


def _git(args: list[str], cwd: Path) -> subprocess.CompletedProcess[bytes] | None:
    exe = _git_exe()
    if exe is None:
        return None
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C"}
    try:
        return subprocess.run(
            [exe, *args], cwd=cwd, capture_output=True, timeout=_TIMEOUT_S, env=env, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None


@dataclass
class RepoState:
    """HEAD and the dirty paths of one repository, read once.

    Paths are kept as strings: a pass asks about 1,000s of files, and hashing
    and comparing pathlib objects costs more than the answer.
    """

    root: Path
    commit: str | None
    dirty: set[str] = field(default_factory=set)
    dirty_dirs: set[str] = field(default_factory=set)  # untracked folders, listed whole

    def __post_init__(self) -> None:
        self._prefix = f"{self.root}{os.sep}"
        self._infos: dict[bool, GitInfo] = {}

    def is_dirty(self, path: Path | str) -> bool:
        """``path`` must be absolute and resolved (GitLineage.info sees to it)."""
        text = str(path)
        if text in self.dirty:
            return True
        return any(text.startswith(f"{d}{os.sep}") for d in self.dirty_dirs)

    def contains(self, path: Path | str) -> bool:
        # A string prefix test: pathlib's is_relative_to costs an exception per miss.
        return str(path).startswith(self._prefix)

    def info(self, dirty: bool) -> GitInfo:
        """The (immutable) answer for a recipe of this repository, shared by all of them."""
        found = self._infos.get(dirty)
        if found is None:
            found = self._infos[dirty] = GitInfo(commit=self.commit, dirty=dirty,
                                                 repo_root=str(self.root))
        return found


def locate(folder: Path) -> tuple[Path, str | None] | None:
    """The root of the repository ``folder`` is in, and its HEAD (None before the first
    commit); None outside a repository. One ``git`` call for both."""
    cp = _git(["rev-parse", "--show-toplevel", "--verify", "-q", "HEAD"], folder)
    # Exit 1 with the top level printed: a repository without commits yet.
    if cp is None or cp.returncode not in (0, 1):
        return None
    lines = cp.stdout.decode().splitlines()
    if not lines or not lines[0].strip():
        return None
    commit = lines[1].strip() if cp.returncode == 0 and len(lines) > 1 else None
    return Path(lines[0].strip()).resolve(), commit or None


def repo_root(path: Path) -> Path | None:
    found = locate(path if path.is_dir() else path.parent)
    return None if found is None else found[0]


def read_repo(root: Path, commit: str | None = None) -> RepoState:
    """The dirty paths of the repository at ``root`` (``commit``: its HEAD, if known)."""
    if commit is None:
        found = locate(root)
        commit = found[1] if found is not None else None
    state = RepoState(root=root, commit=commit)
    st = _git(["status", "--porcelain=v1", "-z", "--untracked-files=normal",
               "--ignored=no"], root)
    if st is None or st.returncode != 0:
        return state
    entries = st.stdout.decode(errors="surrogateescape").split("\0")
    i = 0
    while i < len(entries):
        entry = entries[i]
        i += 1
        if len(entry) < 4:
            continue
        xy, rel = entry[:2], entry[3:]
        if "R" in xy or "C" in xy:
            i += 1  # -z puts the rename source in the next field
        p = str((root / rel).resolve())
        if rel.endswith("/"):
            state.dirty_dirs.add(p)
        else:
            state.dirty.add(p)
    return state


class GitLineage:
    """Answers "which commit, dirty or not" for recipe files, reading each repository once."""

    def __init__(self) -> None:
        self._roots: dict[str, Path | None] = {}  # folder -> its repository's root
        self._repos: dict[Path, RepoState] = {}

    def _repo_for(self, path: Path) -> RepoState | None:
        folder = os.path.dirname(str(path))
        if folder not in self._roots:
            found = locate(Path(folder))
            self._roots[folder] = found[0] if found is not None else None
            if found is not None and found[0] not in self._repos:
                self._repos[found[0]] = read_repo(*found)
        root = self._roots[folder]
        return None if root is None else self._repos[root]

    def info(self, recipe: Path, data_files: Iterable[Path] = ()) -> GitInfo | None:
        """Commit of the recipe's repository, and whether the recipe or its data are dirty.

        None when the recipe is not in a git repository (or git is not installed).
        """
        recipe = recipe if recipe.is_absolute() else recipe.resolve()
        repo = self._repo_for(recipe)
        if repo is None:
            return None
        dirty = False
        if repo.dirty or repo.dirty_dirs:
            # Data paths from LoadedRecipe are already resolved; resolving 1,000s again is
            # the slowest part of a no-op pass (one lstat per path component).
            files = [recipe, *(f if f.is_absolute() else f.resolve() for f in data_files)]
            dirty = any(repo.is_dirty(f) for f in files if repo.contains(f))
        return repo.info(dirty)


def git_info(recipe: Path, data_files: Iterable[Path] = ()) -> GitInfo | None:
    """One-off form of :meth:`GitLineage.info`."""
    return GitLineage().info(recipe, data_files)
