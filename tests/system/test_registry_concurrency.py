"""The registry under concurrent writers in separate processes, on local disk and on S3 (moto).

Each process registers versions and promotes each through the gate (tolerance 0) at the same
time as the others. Afterwards: every version is distinct and complete, the alias's log is one
unbroken chain (no lost change), every promotion was judged against the version that really
held the alias, and the holder is the best model.
"""

import multiprocessing as mp
import threading
import time

import pyarrow.fs as pafs
import pytest

from rayline.errors import RegistryError
from rayline.registry import Registry, promote
from rayline.storage import Storage
from tests.conftest import MOTO_SERIAL_PORT, SerialMotoServer

PROCS, ROUNDS = 4, 4
BUCKET = "registry-race"


def _auc(n: int, i: int) -> float:
    return round(0.60 + ((n * 7 + i * 13) % 17) / 100, 2)  # distinct enough, with ties


def _race(root: str, n: int, start: float, q) -> None:
    reg = Registry(Storage(root), "m")
    time.sleep(max(0.0, start - time.time()))  # all processes begin together
    out = []
    for i in range(ROUNDS):
        auc = _auc(n, i)
        v = reg.register({"weights.pt": f"w{n}-{i}".encode() * 1000},
                         {"metric": "auc", "mode": "max", "test": {"auc": auc}},
                         {"run_name": f"w{n}-{i}", "ingest_key": "same"}).version
        try:
            p = promote(reg, v, "production", tolerance=0.0)
            out.append((v, auc, "promoted", p.previous))
        except RegistryError as e:
            assert "refusing to promote" in str(e), e
            out.append((v, auc, "refused", None))
    q.put(out)


def _run_race(root: str) -> list[tuple]:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    start = time.time() + 8  # spawned interpreters import rayline first
    procs = [ctx.Process(target=_race, args=(root, n, start, q)) for n in range(PROCS)]
    [p.start() for p in procs]
    results = [r for _ in procs for r in q.get(timeout=240)]
    [p.join(timeout=60) for p in procs]
    assert all(p.exitcode == 0 for p in procs)
    return results


def _check(root: str, results: list[tuple]) -> None:
    reg = Registry(Storage(root), "m")
    versions = sorted(v for v, *_ in results)
    assert versions == list(range(1, PROCS * ROUNDS + 1))      # distinct numbers, none lost
    assert reg.versions() == versions
    for v, auc, *_ in results:
        reg.verify(v)                                            # complete, not mixed: checksums hold
        assert reg.get(v).metrics["test"]["auc"] == auc
        assert reg.read_file(v, "weights.pt").startswith(reg.get(v).lineage["run_name"].encode())
    log = reg.alias_log("production")
    promoted = [r for r in results if r[2] == "promoted" and r[3] != r[0]]
    assert [e["seq"] for e in log] == list(range(1, len(log) + 1))
    assert len(log) == len(promoted)                             # every accepted promotion is in the history
    prev = None
    for e in log:                                                # one chain: each change saw the real holder
        assert e["previous"] == prev
        if prev is not None:
            assert e["value"] >= reg.get(prev).metrics["test"]["auc"]  # the gate compared with it
            assert e["previous_value"] == reg.get(prev).metrics["test"]["auc"]
        prev = e["version"]
    best = max(auc for _, auc, *_ in results)
    assert reg.get(reg.resolve("production")).metrics["test"]["auc"] == best


def test_concurrent_registrations_and_promotions_on_local_disk(tmp_path):
    root = str(tmp_path / "root")
    _check(root, _run_race(root))


@pytest.fixture(scope="module")
def serial_s3():
    with SerialMotoServer(MOTO_SERIAL_PORT):
        fs = pafs.S3FileSystem(endpoint_override=f"127.0.0.1:{MOTO_SERIAL_PORT}", scheme="http",
                               region="us-east-1", allow_bucket_creation=True)
        fs.create_dir(BUCKET)
        yield f"endpoint_override=127.0.0.1:{MOTO_SERIAL_PORT}&scheme=http&region=us-east-1"


def test_concurrent_registrations_and_promotions_on_s3(serial_s3):
    root = f"s3://{BUCKET}/race?{serial_s3}"
    _check(root, _run_race(root))


def test_exclusive_create_on_s3_has_one_winner(serial_s3):
    s = Storage(f"s3://{BUCKET}/excl?{serial_s3}")
    wins = []
    threads = [threading.Thread(target=lambda i=i: wins.append(s.create_exclusive(str(i).encode(), "claims", "1")))
               for i in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert sorted(wins) == [False] * 7 + [True]
    assert s.read_bytes("claims", "1").decode() in {str(i) for i in range(8)}


def test_sweep_on_s3_removes_an_unfinished_publish_and_old_staging(serial_s3):
    s = Storage(f"s3://{BUCKET}/sweep?{serial_s3}")
    reg = Registry(s, "m", stale_after_s=3600)
    reg.register({"weights.pt": b"w"}, {"metric": "auc", "mode": "max", "test": {"auc": 0.7}}, {"run_name": "a"})
    old = int(time.time()) - 7200
    s.write_bytes(b"w", f"models/m/.tmp-version-{old}-0123456789/weights.pt")
    s.write_bytes(str(old).encode(), "models/m/claims/2")
    s.write_bytes(b"half", "models/m/2/weights.pt")  # a copy-publish that died: no _SUCCESS
    young = s.temp_dir("models/m", "version")
    s.write_bytes(b"w", young, "weights.pt")          # a live writer's staging (S3 has no dir mtime)
    assert reg.register({"weights.pt": b"w2"}, {"metric": "auc", "mode": "max", "test": {"auc": 0.7}},
                        {"run_name": "b"}).version == 3
    left = set(s.list_dir("models/m"))
    assert "2" not in left and not any(n.startswith(f".tmp-version-{old}") for n in left)
    assert young.rsplit("/", 1)[1] in left and {"1", "3"} <= left
