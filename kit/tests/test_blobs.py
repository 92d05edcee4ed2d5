"""Unit tests of the content-addressed blob store."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys

import pytest

from kit.blobs import DIR_MODE, FILE_MODE, MAX_BLOB_BYTES, BlobStore, InvalidBlobId
from kit.errors import NotFound, PayloadTooLarge


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


def test_get_and_size_read_a_blob_back_and_missing_ones_are_not_found(store):
    digest = store.put(b"%PDF-1.4 body")
    assert store.get(digest) == b"%PDF-1.4 body"
    assert store.size(digest) == len(b"%PDF-1.4 body")
    missing = hashlib.sha256(b"never stored").hexdigest()
    with pytest.raises(NotFound):
        store.get(missing)
    with pytest.raises(NotFound):
        store.size(missing)
    with pytest.raises(InvalidBlobId):
        store.get("../../etc/passwd")


def test_a_blob_over_the_cap_is_refused_and_nothing_is_written(tmp_path):
    store = BlobStore(tmp_path / "blobs", max_bytes=8)
    assert store.get(store.put(b"12345678")) == b"12345678"
    with pytest.raises(PayloadTooLarge):
        store.put(b"123456789")
    assert not store.exists(hashlib.sha256(b"123456789").hexdigest())
    assert BlobStore(tmp_path / "b").max_bytes == MAX_BLOB_BYTES
    with pytest.raises(ValueError):
        BlobStore(tmp_path / "c", max_bytes=0)


def test_another_process_with_the_same_blob_dir_reads_what_this_one_stored(tmp_path):
    # Services run in separate processes (pods) that share BLOB_DIR: one writes, one reads.
    root = tmp_path / "shared"
    env = {**os.environ, "BLOB_DIR": str(root)}
    code = (
        "import sys; from kit.blobs import store_from_settings; "
        "print(store_from_settings().put(sys.stdin.buffer.read()))"
    )
    written = subprocess.run(
        [sys.executable, "-c", code],
        input=b"from the gateway",
        env=env,
        capture_output=True,
        check=True,
        timeout=60,
    )
    digest = written.stdout.decode().strip()
    assert BlobStore(root).get(digest) == b"from the gateway"
    assert _mode(root) == DIR_MODE
