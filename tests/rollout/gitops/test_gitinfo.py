"""Git lineage against a real repository made with the `git` command."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from rollout.gitops.gitinfo import GitLineage, git_info


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True,
                          text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    _git(tmp_path, "init", "-q", "-b", "main")
    _git(tmp_path, "config", "user.email", "t@example.com")
    _git(tmp_path, "config", "user.name", "t")
    (tmp_path / "recipes").mkdir()
    (tmp_path / "data").mkdir()
    (tmp_path / "recipes" / "a.yaml").write_text("a: 1\n")
    (tmp_path / "data" / "a.jsonl").write_text("{}\n")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-q", "-m", "init")
    return tmp_path


def test_clean_recipe_reports_head_commit(repo: Path) -> None:
    info = git_info(repo / "recipes" / "a.yaml", [repo / "data" / "a.jsonl"])
    assert info is not None
    assert info.commit == _git(repo, "rev-parse", "HEAD")
    assert info.dirty is False
    assert info.repo_root == str(repo.resolve())


@pytest.mark.parametrize(
    "edit",
    [pytest.param("recipes/a.yaml", id="recipe-edited"),
     pytest.param("data/a.jsonl", id="data-edited"),
     pytest.param("data/new/b.jsonl", id="untracked-data-folder")],
)
def test_edited_or_untracked_files_are_dirty(repo: Path, edit: str) -> None:
    target = repo / edit
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("changed\n")
    info = GitLineage().info(repo / "recipes" / "a.yaml", [target])
    assert info is not None and info.dirty is True


def test_unrelated_dirty_file_does_not_taint_recipe(repo: Path) -> None:
    (repo / "README").write_text("x\n")
    info = git_info(repo / "recipes" / "a.yaml", [repo / "data" / "a.jsonl"])
    assert info is not None and info.dirty is False


def test_repository_without_commits_has_no_sha(tmp_path: Path) -> None:
    _git(tmp_path, "init", "-q")
    (tmp_path / "r.yaml").write_text("x\n")
    info = git_info(tmp_path / "r.yaml")
    assert info is not None and info.commit is None and info.dirty is True


def test_outside_a_repository_is_none(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text("x\n")
    assert git_info(tmp_path / "r.yaml") is None
