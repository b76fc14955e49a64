"""file_digest, the data digest of the spec hash: the bytes' xxh3, and a changed byte is seen."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import xxhash

from recipes.identity import _CHUNK, DigestCache, file_digest


@pytest.mark.parametrize("size", [
    pytest.param(0, id="empty"),
    pytest.param(_CHUNK - 1, id="under-one-chunk"),
    pytest.param(3 * _CHUNK + 12345, id="several-chunks"),
])
def test_digest_is_xxh3_of_the_bytes(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    f = tmp_path / "data.bin"
    f.write_bytes(data)
    assert file_digest(f) == f"xxh3_128:{xxhash.xxh3_128(data).hexdigest()}"


def test_one_changed_byte_changes_the_cached_digest(tmp_path: Path) -> None:
    data = bytearray(os.urandom(2 * _CHUNK))
    f = tmp_path / "data.bin"
    f.write_bytes(data)
    cache = DigestCache(tmp_path / "digests.sqlite")
    before = file_digest(f, cache)
    assert file_digest(f, cache) == before
    data[_CHUNK + 1] ^= 1  # same size: only the content and the mtime change
    f.write_bytes(bytes(data))
    after = file_digest(f, cache)
    assert after != before
    assert after == f"xxh3_128:{xxhash.xxh3_128(bytes(data)).hexdigest()}"
