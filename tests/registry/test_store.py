"""The artifact store: atomic, idempotent, verified; pickles refused; S3 through moto's server."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from recipes.artifact import ArtifactError
from registry.api import Registry
from registry.errors import ArtifactCorrupt, ArtifactRefused
from registry.settings import Settings
from registry.store import ArtifactStore, blob_key, safe_relpath
from tests.support.clock import FakeClock
from tests.support.factories import ArtifactFactory
from tests.support.paths import REPO
from tests.support.s3 import moto_s3


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_put_is_idempotent_and_content_addressed(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "store"))
    f = tmp_path / "a.txt"
    f.write_text("hello")
    d1 = store.put_file(f)
    d2 = store.put_file(f)
    assert d1 == d2 == "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    blobs = [p for p in (tmp_path / "store").rglob("*") if p.is_file()]
    assert [p.relative_to(tmp_path / "store").as_posix() for p in blobs] == [blob_key(d1)]
    out = tmp_path / "copy.txt"
    store.get_file(d1, out)
    assert out.read_text() == "hello"


def test_put_refuses_bytes_that_do_not_match_the_expected_digest(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "store"))
    f = tmp_path / "a.txt"
    f.write_text("hello")
    with pytest.raises(ArtifactCorrupt, match=r"a\.txt: sha256 2cf24dba5fb0\.\.\. is not the "):
        store.put_file(f, "sha256:" + "0" * 64)
    assert not (tmp_path / "store").exists() or not any((tmp_path / "store").rglob("*.txt"))


def test_a_flipped_byte_in_the_store_is_refused(
    registry: Registry, make_artifact: ArtifactFactory, tmp_path: Path
) -> None:
    v = registry.register_artifact(make_artifact())
    manifest = registry.get_artifact(v.artifact_digest or "").manifest
    weights = next(e for e in manifest["files"] if e["path"].endswith(".safetensors"))
    _flip_a_byte(Path(registry.settings.artifact_store) / blob_key(weights["sha256"]))
    with pytest.raises(ArtifactCorrupt, match=r"stored blob .* hashes to sha256 .* the artifact "
                                              r"store is corrupt"):
        registry.fetch_artifact(v, tmp_path / "cache")
    assert not (tmp_path / "cache" / (v.artifact_digest or "")[7:]).exists()
    assert [p.name for p in (tmp_path / "cache").iterdir()] == []  # no temp left behind


def test_a_tampered_local_copy_is_rebuilt(
    registry: Registry, make_artifact: ArtifactFactory, tmp_path: Path
) -> None:
    v = registry.register_artifact(make_artifact())
    out = registry.fetch_artifact(v, tmp_path / "cache")
    original = (out / "adapter_model.safetensors").read_bytes()
    _flip_a_byte(out / "adapter_model.safetensors")
    again = registry.fetch_artifact(v, tmp_path / "cache")
    assert again == out and (out / "adapter_model.safetensors").read_bytes() == original


@pytest.mark.parametrize(("files", "message"), [
    pytest.param({"optimizer.pt": b"\x80\x04pickle"}, "pickle-format files: optimizer.pt",
                 id="pickle"),
    pytest.param({"extra.safetensors": b"\x10\x00\x00\x00\x00\x00\x00\x00not json"},
                 r"extra.safetensors \(not a safetensors file\)", id="fake-safetensors"),
    pytest.param({"blob.dat": bytes(range(256))}, r"blob.dat \(binary, not safetensors\)",
                 id="binary"),
])
def test_forbidden_files_are_refused_and_nothing_is_written(
    registry: Registry, make_artifact: ArtifactFactory, files: dict[str, bytes], message: str
) -> None:
    if "optimizer.pt" in files:  # write_manifest itself refuses pickles; add it afterwards
        art = make_artifact()
        (art / "optimizer.pt").write_bytes(files["optimizer.pt"])
        err: type[Exception] = ArtifactError
    else:
        art = make_artifact(extra_files=files)
        err = ArtifactRefused
    with pytest.raises(err, match=message):
        registry.register_artifact(art)
    assert registry.list_models() == []
    store = Path(registry.settings.artifact_store)
    assert not store.exists() or not any(store.rglob("*"))


@pytest.mark.parametrize("rel", [
    pytest.param("../x", id="parent"), pytest.param("/etc/passwd", id="absolute"),
    pytest.param("a/../../b", id="nested-parent"), pytest.param("a//b", id="unnormalised"),
])
def test_manifest_paths_cannot_escape(rel: str) -> None:
    with pytest.raises(ArtifactRefused, match="escapes the artifact directory"):
        safe_relpath(rel)


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server on loopback, with a bucket `reg`."""
    with moto_s3("reg") as env:
        yield env["AWS_ENDPOINT_URL_S3"]


def test_s3_round_trip_through_moto_server(
    s3_endpoint: str, make_artifact: ArtifactFactory, tmp_path: Path
) -> None:
    import boto3  # type: ignore[import-untyped]

    settings = Settings(home=tmp_path / "home", database_url=f"sqlite:///{tmp_path / 'r.db'}",
                        artifact_store="s3://reg/team-a/artifacts")
    art = make_artifact()
    with Registry(settings, clock=FakeClock()) as reg:
        v = reg.register_artifact(art)
        keys = sorted(o["Key"] for o in boto3.client("s3").list_objects_v2(
            Bucket="reg", Prefix="team-a/artifacts/")["Contents"])
        assert len(keys) == len(list(art.iterdir()))  # every file + the manifest, once each
        assert all(k.startswith("team-a/artifacts/blobs/sha256/") for k in keys)
        out = reg.fetch_artifact(v, tmp_path / "cache")
        for f in art.iterdir():
            assert (out / f.name).read_bytes() == f.read_bytes()
        # corrupt one object in the bucket: the next fetch refuses it
        weights = next(k for k in keys if k.endswith(
            next(e["sha256"] for e in reg.get_artifact(v.artifact_digest or "").manifest["files"]
                 if e["path"] == "adapter_model.safetensors")))
        boto3.client("s3").put_object(Bucket="reg", Key=weights, Body=b"tampered")
        with pytest.raises(ArtifactCorrupt, match="s3://reg/team-a/artifacts/blobs/sha256/"):
            reg.fetch_artifact(v, tmp_path / "cache2")



@pytest.mark.parametrize("where", ["local", "s3"])
def test_refs_are_written_replaced_and_deleted(where: str, tmp_path: Path,
                                               request: pytest.FixtureRequest) -> None:
    url = (str(tmp_path / "store") if where == "local"
           else f"s3://reg/{tmp_path.name}/artifacts")
    if where == "s3":
        request.getfixturevalue("s3_endpoint")
    store = ArtifactStore(url)
    assert store.get_ref("runs/a-1/checkpoint") is None
    store.put_ref("runs/a-1/checkpoint", '{"step": 10}')
    store.put_ref("runs/a-1/checkpoint", '{"step": 20}')
    assert store.get_ref("runs/a-1/checkpoint") == '{"step": 20}'
    store.delete_ref("runs/a-1/checkpoint")
    assert store.get_ref("runs/a-1/checkpoint") is None
    store.delete_ref("runs/a-1/checkpoint")  # twice is fine
    with pytest.raises(ArtifactRefused, match="is not a ref name"):
        store.delete_ref("../escape")


# -- temp files left by writers killed mid-write ---------------------------------------------

_WRITER = """
import sys
from registry.store import ArtifactStore
ArtifactStore(sys.argv[1])._backend.put(__import__("pathlib").Path(sys.argv[2]), sys.argv[3])
"""


def _flocked(path: Path) -> bool:
    """Whether some process holds a flock on ``path`` (its inode is in /proc/locks)."""
    try:
        inode = path.stat().st_ino
    except FileNotFoundError:
        return False
    return any(line.split()[1] == "FLOCK" and line.split()[5].endswith(f":{inode}")
               for line in Path("/proc/locks").read_text().splitlines())


def _writer_blocked_mid_write(store: Path, fifo: Path, key: str) -> tuple[Any, IO[bytes]]:
    """A real process storing ``key`` from a FIFO, stopped in the middle of the copy: it
    holds its temp file, flocked (the kernel's /proc/locks shows it), until the FIFO
    gives it more."""
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(store), str(fifo), key],
                            cwd=REPO)
    feed = fifo.open("wb")
    feed.write(b"first half ")
    feed.flush()
    deadline = time.monotonic() + 60
    while not any(_flocked(p) for p in (store / key).parent.glob(".tmp.*")):
        assert proc.poll() is None and time.monotonic() < deadline, "the writer never started"
        time.sleep(0.02)
    return proc, feed


def test_the_sweep_removes_a_killed_writers_temp_file_and_spares_a_live_one(
    tmp_path: Path,
) -> None:
    root = tmp_path / "store"
    store = ArtifactStore(str(root))
    key = blob_key("sha256:" + "ab" * 32)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)

    # Killed mid-write: its temp file stays until a sweep, which removes it.
    proc, feed = _writer_blocked_mid_write(root, fifo, key)
    assert store.sweep() == []  # alive: its lock is held
    [tmp] = (root / key).parent.glob(".tmp.*")
    proc.kill()
    proc.wait(timeout=30)
    feed.close()
    assert tmp.exists()
    assert store.sweep() == [tmp.relative_to(root).as_posix()]
    assert not tmp.exists() and not (root / key).exists()

    # A live writer is never disturbed: swept while it writes, it still finishes.
    proc, feed = _writer_blocked_mid_write(root, fifo, key)
    assert store.sweep() == []
    feed.write(b"second half")
    feed.close()
    assert proc.wait(timeout=60) == 0
    assert (root / key).read_bytes() == b"first half second half"
    assert [p.name for p in (root / key).parent.iterdir()] == [(root / key).name]

