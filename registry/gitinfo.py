"""GitOps lineage: the commit a recipe came from and whether its files were dirty.

Uses the ``git`` command rather than a library (GitPython, dulwich): it is
what the user's repository is managed with, so it reads every repository
feature (worktrees, sparse checkouts, hooks-free status) exactly as the user
sees it, and it adds no dependency. One ``git status`` per repository and
pass, not per recipe, keeps 1,000 recipes fast.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from registry.reconcile_plan import GitInfo

_TIMEOUT_S = 30


def _git(args: list[str], cwd: Path) -> subprocess.CompletedProcess[bytes] | None:
    exe = shutil.which("git")
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
    """HEAD and the dirty paths of one repository, read once."""

    root: Path
    commit: str | None
    dirty: set[Path] = field(default_factory=set)
    dirty_dirs: set[Path] = field(default_factory=set)  # untracked folders, listed whole

    def is_dirty(self, path: Path) -> bool:
        """``path`` must be absolute and resolved (GitLineage.info sees to it)."""
        if path in self.dirty:
            return True
        text = str(path)
        return any(text.startswith(f"{d}{os.sep}") for d in self.dirty_dirs)

    def contains(self, path: Path) -> bool:
        # A string prefix test: pathlib's is_relative_to costs an exception per miss.
        return str(path).startswith(f"{self.root}{os.sep}")


def repo_root(path: Path) -> Path | None:
    start = path if path.is_dir() else path.parent
    cp = _git(["rev-parse", "--show-toplevel"], start)
    if cp is None or cp.returncode != 0:
        return None
    return Path(cp.stdout.decode().strip()).resolve()


def read_repo(root: Path) -> RepoState:
    head = _git(["rev-parse", "--verify", "-q", "HEAD"], root)
    commit = head.stdout.decode().strip() if head is not None and head.returncode == 0 else None
    state = RepoState(root=root, commit=commit or None)
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
        p = (root / rel).resolve()
        if rel.endswith("/"):
            state.dirty_dirs.add(p)
        else:
            state.dirty.add(p)
    return state


class GitLineage:
    """Answers "which commit, dirty or not" for recipe files, reading each repository once."""

    def __init__(self) -> None:
        self._roots: dict[Path, Path | None] = {}
        self._repos: dict[Path, RepoState] = {}

    def _repo_for(self, path: Path) -> RepoState | None:
        folder = path.parent
        if folder not in self._roots:
            self._roots[folder] = repo_root(folder)
        root = self._roots[folder]
        if root is None:
            return None
        if root not in self._repos:
            self._repos[root] = read_repo(root)
        return self._repos[root]

    def info(self, recipe: Path, data_files: Iterable[Path] = ()) -> GitInfo | None:
        """Commit of the recipe's repository, and whether the recipe or its data are dirty.

        None when the recipe is not in a git repository (or git is not installed).
        """
        recipe = recipe if recipe.is_absolute() else recipe.resolve()
        repo = self._repo_for(recipe)
        if repo is None:
            return None
        # Data paths from LoadedRecipe are already resolved; resolving 1,000s again is
        # the slowest part of a no-op pass (one lstat per path component).
        files = [recipe, *(f if f.is_absolute() else f.resolve() for f in data_files)]
        dirty = any(repo.is_dirty(f) for f in files if repo.contains(f))
        return GitInfo(commit=repo.commit, dirty=dirty, repo_root=str(repo.root))


def git_info(recipe: Path, data_files: Iterable[Path] = ()) -> GitInfo | None:
    """One-off form of :meth:`GitLineage.info`."""
    return GitLineage().info(recipe, data_files)
