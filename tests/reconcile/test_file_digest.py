"""file_digest reads and hashes large files on two threads: same digest as hashing in turn."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import xxhash

from recipes.spec_hash import _CHUNK, _OVERLAP_MIN, DigestCache, file_digest


@pytest.mark.parametrize("size", [
    pytest.param(0, id="empty"),
    pytest.param(_CHUNK + 7, id="small-in-turn"),
    pytest.param(_OVERLAP_MIN, id="threshold-overlapped"),
    pytest.param(_OVERLAP_MIN + 3 * _CHUNK + 12345, id="large-overlapped"),
])
def test_digest_is_xxh3_of_the_bytes(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    f = tmp_path / "data.bin"
    f.write_bytes(data)
    assert file_digest(f) == f"xxh3_128:{xxhash.xxh3_128(data).hexdigest()}"


def test_one_changed_byte_in_a_large_file_changes_the_cached_digest(tmp_path: Path) -> None:
    data = bytearray(os.urandom(_OVERLAP_MIN + _CHUNK))
    f = tmp_path / "data.bin"
    f.write_bytes(data)
    cache = DigestCache(tmp_path / "digests.sqlite")
    before = file_digest(f, cache)
    assert file_digest(f, cache) == before
    data[_OVERLAP_MIN - 1] ^= 1  # same size; only the content and the mtime change
    f.write_bytes(bytes(data))
    after = file_digest(f, cache)
    assert after != before
    assert after == f"xxh3_128:{xxhash.xxh3_128(bytes(data)).hexdigest()}"
