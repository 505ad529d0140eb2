"""Storage: atomic writes, publish, exclusive create."""

import os
import threading

import pytest

from rayline.storage import Storage


def test_publish_replaces_atomically(tmp_path):
    s = Storage(str(tmp_path))
    tmp = s.temp_dir("datasets/x/k1")
    s.write_json({"v": 1}, tmp, "manifest.json")
    assert not s.is_complete("datasets/x/k1")
    s.publish(tmp, "datasets/x/k1")
    assert s.is_complete("datasets/x/k1") and s.read_json("datasets/x/k1", "manifest.json") == {"v": 1}
    tmp2 = s.temp_dir("datasets/x/k1")
    s.write_json({"v": 2}, tmp2, "manifest.json")
    s.publish(tmp2, "datasets/x/k1")
    assert s.read_json("datasets/x/k1", "manifest.json") == {"v": 2}
    s.clean_stale("datasets/x")
    assert [n for n in s.list_dir("datasets/x") if n.startswith(".")] == []


def test_exclusive_create_has_one_winner(tmp_path):
    s = Storage(str(tmp_path))
    wins = []

    def race(i):
        if s.create_exclusive(str(i).encode(), "lock"):
            wins.append(i)
    threads = [threading.Thread(target=race, args=(i,)) for i in range(16)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len(wins) == 1 and s.read_bytes("lock") == str(wins[0]).encode()


def test_relative_root_is_resolved_and_uri_roots_are_kept(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert Storage("rl").root == str(tmp_path / "rl")
    assert Storage("s3://bucket/prefix").uri("a", "b") == "s3://bucket/prefix/a/b"


def test_mock_filesystem_second_backend():
    # pyarrow's in-memory filesystem: the same code paths on a non-local backend.
    s = Storage("mock://")
    assert not s.is_local
    s.write_json({"a": 1}, "m", "x.json")
    assert s.read_json("m", "x.json") == {"a": 1}
    assert s.create_exclusive(b"1", "m", "lock") and not s.create_exclusive(b"2", "m", "lock")
    with pytest.raises(FileNotFoundError):
        s.read_bytes("m", "missing.json")


def test_uris_keep_their_query_last():
    from rayline.storage import join_uri, split_uri

    q = "endpoint_override=127.0.0.1:9000&scheme=http"
    assert join_uri(f"s3://b/root?{q}", "datasets", "x/") == f"s3://b/root/datasets/x?{q}"
    assert join_uri("/data/root", "a") == "/data/root/a" and join_uri("/data/root") == "/data/root"
    assert split_uri(f"s3://b/out/preds/?{q}") == (f"s3://b/out?{q}", "preds")
    assert split_uri("s3://b/preds") == ("s3://b", "preds")
    assert split_uri("preds") == (".", "preds") and split_uri("/preds") == ("/", "preds")
    assert Storage(f"s3://b/root?{q}").uri("datasets") == f"s3://b/root/datasets?{q}"


def test_sweep_survives_entries_vanishing_under_it(tmp_path):
    """A concurrent writer renames its staging away while a sweep lists the directory (seen
    as a failed registration with four processes registering at once)."""
    s = Storage(str(tmp_path))
    s.write_bytes(b"x", "models/m/1/w")
    stop, errors = threading.Event(), []

    def churn(n):
        i = 0
        while not stop.is_set():
            tmp = s.temp_dir("models/m", "version")
            s.write_bytes(b"w", tmp, "weights.pt")
            s.delete_dir(tmp)
            os.makedirs(tmp_path / "models" / "m" / f".old-{n}-{i}")  # what a replaced version leaves
            i += 1

    def sweep():
        try:
            for _ in range(300):
                s.clean_stale("models/m", older_than_s=3600)
        except Exception as e:  # noqa: BLE001 - the assertion below reports it
            errors.append(e)
    workers = [threading.Thread(target=churn, args=(n,)) for n in range(2)]
    sweepers = [threading.Thread(target=sweep) for _ in range(2)]
    [t.start() for t in workers + sweepers]
    [t.join() for t in sweepers]
    stop.set()
    [t.join() for t in workers]
    assert errors == []
    s.clean_stale("models/m", older_than_s=3600)
    assert s.list_dir("models/m")[0] == "1" and not any(n.startswith(".old-") for n in s.list_dir("models/m"))


def test_footer_rows_are_each_files_own_in_the_order_given(tmp_path):
    import pyarrow as pa
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    from rayline.storage import FOOTER_READERS, footer_rows

    paths = []
    for i in range(FOOTER_READERS * 2 + 3):  # more files than readers: every footer still answers
        paths.append(str(tmp_path / f"part-{i:03d}.parquet"))
        pq.write_table(pa.table({"x": list(range(i))}), paths[-1])
    paths.reverse()
    assert footer_rows(pafs.LocalFileSystem(), paths) == [int(p[-11:-8]) for p in paths]
    assert Storage(str(tmp_path)).parquet_rows(paths[:1]) == [len(paths) - 1] and footer_rows(pafs.LocalFileSystem(), []) == []
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(pa.ArrowInvalid):
        footer_rows(pafs.LocalFileSystem(), paths[:3] + [str(tmp_path / "bad.parquet")])


def test_a_root_that_cannot_be_written_is_named_before_any_work(tmp_path):
    """A root below a file (a typo, a mount that is not there): once the ingest failed inside a Ray
    task as "source 't': reading or processing failed: Cannot create directory"."""
    import pytest

    from rayline.errors import StorageError

    Storage(str(tmp_path / "ok")).check_writable()
    assert os.listdir(tmp_path / "ok") == []  # the probe is gone
    (tmp_path / "afile").write_text("x")
    with pytest.raises(StorageError, match=r"storage.root .*afile/root cannot be written"):
        Storage(str(tmp_path / "afile" / "root")).check_writable()
