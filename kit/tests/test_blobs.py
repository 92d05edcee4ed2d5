"""Unit tests of the content-addressed blob store."""

from __future__ import annotations

import hashlib
import os
import stat

import pytest

from kit.blobs import DIR_MODE, FILE_MODE, BlobStore, InvalidBlobId
from kit.errors import NotFound


@pytest.fixture
def store(tmp_path):
    return BlobStore(tmp_path / "blobs")


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_put_stores_under_the_sha256_in_two_levels_of_directories(store):
    data = b"%PDF-1.7\nhello\n"
    digest = store.put(data)
    assert digest == hashlib.sha256(data).hexdigest()
    path = store.root / digest[:2] / digest[2:4] / digest
    assert path.read_bytes() == data
    assert store.path_of(digest) == path
    assert store.exists(digest)


def test_modes_are_0640_for_files_and_0750_for_directories_whatever_the_umask(store):
    old = os.umask(0)
    try:
        digest = store.put(b"some bytes")
    finally:
        os.umask(old)
    path = store.path_of(digest)
    assert _mode(path) == FILE_MODE == 0o640
    assert _mode(path.parent) == DIR_MODE == 0o750
    assert _mode(path.parent.parent) == DIR_MODE
    assert _mode(store.root) == DIR_MODE


def test_same_content_is_stored_once_and_no_temporary_files_remain(store):
    first = store.put(b"same")
    mtime = store.path_of(first).stat().st_mtime_ns
    second = store.put(b"same")
    assert first == second
    assert store.path_of(first).stat().st_mtime_ns == mtime  # not rewritten
    files = [p for p in store.root.rglob("*") if p.is_file()]
    assert files == [store.path_of(first)]


def test_different_contents_get_different_files(store):
    a, b = store.put(b"a"), store.put(b"b")
    assert a != b
    assert store.open(a).read() == b"a"
    with store.open(b) as fh:
        assert fh.read() == b"b"


def test_empty_content_is_a_valid_blob(store):
    digest = store.put(b"")
    assert digest == hashlib.sha256(b"").hexdigest()
    with store.open(digest) as fh:
        assert fh.read() == b""


def test_missing_blob_is_not_found(store):
    missing = hashlib.sha256(b"never stored").hexdigest()
    assert not store.exists(missing)
    with pytest.raises(NotFound):
        store.open(missing)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "../../etc/passwd",
        "../" + "a" * 61,
        "a" * 63,
        "a" * 65,
        "g" * 64,
        "A" * 64,  # only the lowercase form put() returns is a name
        "a" * 62 + "/.",
        "/" + "a" * 63,
        "a" * 64 + "\n",
        "a" * 32 + "\x00" + "a" * 31,
    ],
)
def test_anything_but_a_lowercase_sha256_is_refused_before_touching_the_disk(store, bad):
    with pytest.raises(InvalidBlobId):
        store.open(bad)
    with pytest.raises(InvalidBlobId):
        store.exists(bad)
    assert not store.root.exists()


def test_non_string_ids_are_refused(store):
    with pytest.raises(InvalidBlobId):
        store.open(None)  # type: ignore[arg-type]


def test_a_failed_write_leaves_no_temporary_file(store, monkeypatch):
    def boom(*_args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError, match="disk full"):
        store.put(b"doomed")
    digest = hashlib.sha256(b"doomed").hexdigest()
    assert not store.exists(digest)
    assert [p for p in store.root.rglob("*") if p.is_file()] == []


def test_root_is_resolved_so_relative_roots_do_not_move_with_the_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = BlobStore("var/blobs")
    assert store.root == (tmp_path / "var" / "blobs").resolve()
    digest = store.put(b"x")
    assert (tmp_path / "var" / "blobs" / digest[:2] / digest[2:4] / digest).is_file()
