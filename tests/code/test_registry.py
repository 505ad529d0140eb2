"""Registry: versions, aliases, gated promotion, rollback, concurrent writers."""

import multiprocessing as mp

import pytest

from rayline.errors import RegistryError
from rayline.registry import Registry, promote
from rayline.storage import Storage


def _register(reg: Registry, auc: float, ingest_key: str = "k1", run: str = "r"):
    return reg.register({"weights.pt": b"w", "report/report.md": b"# r"},
                        {"metric": "auc", "mode": "max", "test": {"auc": auc, "rows": 10}},
                        {"run_name": run, "ingest_key": ingest_key})


def test_versions_count_up_and_carry_lineage(tmp_path):
    reg = Registry(Storage(str(tmp_path)), "m")
    a, b = _register(reg, 0.7), _register(reg, 0.71, run="r2")
    assert (a.version, b.version) == (1, 2) and reg.versions() == [1, 2]
    assert reg.get(2).lineage["run_name"] == "r2" and reg.get(2).lineage["version"] == 2
    assert reg.find_run("r2").version == 2 and reg.find_run("nope") is None
    assert reg.read_file(1, "report/report.md") == b"# r"
    with pytest.raises(RegistryError, match="has no version 9"):
        reg.get(9)


def test_half_written_version_is_invisible(tmp_path):
    s = Storage(str(tmp_path))
    reg = Registry(s, "m")
    _register(reg, 0.7)
    s.write_bytes(b"partial", "models/m/2/weights.pt")  # a crashed writer, no _SUCCESS
    assert reg.versions() == [1] and reg.resolve("latest") == 1


def test_promotion_gate_refuses_worse_and_force_overrides(tmp_path):
    reg = Registry(Storage(str(tmp_path)), "m")
    _register(reg, 0.70)
    _register(reg, 0.65)
    _register(reg, 0.698)
    assert promote(reg, 1, "production").previous is None
    with pytest.raises(RegistryError) as e:
        promote(reg, 2, "production", tolerance=0.005)
    assert "auc 0.6500 vs 0.7000" in str(e.value) and reg.aliases()["production"] == 1
    p = promote(reg, 3, "production", tolerance=0.005)  # within tolerance
    assert p.version == 3 and p.previous == 1
    p = promote(reg, 2, "production", tolerance=0.005, force=True)
    assert p.forced and reg.aliases()["production"] == 2
    assert reg.rollback("production") == 3 and reg.rollback("production") == 1
    with pytest.raises(RegistryError, match="no earlier version"):
        reg.rollback("production")


def test_promotion_across_data_uses_reevaluation(tmp_path):
    reg = Registry(Storage(str(tmp_path)), "m")
    _register(reg, 0.70, ingest_key="old")
    _register(reg, 0.69, ingest_key="new")
    promote(reg, 1, "production")
    calls = []

    def reevaluate(current, candidate):
        calls.append((current.version, candidate.version))
        return 0.60  # the old model is worse on the new test split
    assert promote(reg, 2, "production", reevaluate=reevaluate).previous_value == 0.60
    assert calls == [(1, 2)]


def _writer(root, n, q):
    reg = Registry(Storage(root), "m")
    q.put([_register(reg, 0.5, run=f"w{n}-{i}").version for i in range(5)])


def test_concurrent_writers_get_distinct_versions(tmp_path):
    q = mp.get_context("spawn").Queue()
    procs = [mp.get_context("spawn").Process(target=_writer, args=(str(tmp_path), n, q)) for n in range(4)]
    [p.start() for p in procs]
    got = sorted(v for _ in procs for v in q.get(timeout=120))
    [p.join() for p in procs]
    assert got == list(range(1, 21))
    reg = Registry(Storage(str(tmp_path)), "m")
    assert reg.versions() == list(range(1, 21))
    assert sorted(reg.get(v).lineage["run_name"] for v in got) == sorted(f"w{n}-{i}" for n in range(4) for i in range(5))
