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


def test_tampered_or_truncated_file_is_named_on_load(tmp_path):
    s = Storage(str(tmp_path))
    reg = Registry(s, "m")
    v = _register(reg, 0.7).version
    reg.verify(v)
    manifest = s.read_json("models/m/1/manifest.json")["files"]
    assert set(manifest) == {"weights.pt", "metrics.json", "lineage.json"}  # report/ is regenerated: outside
    (tmp_path / "models/m/1/weights.pt").write_bytes(b"x")  # swapped
    with pytest.raises(RegistryError, match=r"version 1: file weights.pt does not match manifest.json"):
        reg.read_file(v, "weights.pt")
    with pytest.raises(RegistryError, match="weights.pt"):
        reg.verify(v)
    with pytest.raises(RegistryError, match="weights.pt"):
        promote(reg, v, "production")  # a version that does not check out is never promoted
    (tmp_path / "models/m/1/lineage.json").unlink()
    with pytest.raises(RegistryError, match="lineage.json listed in manifest.json is missing"):
        Registry(s, "m").verify(v)


def test_alias_log_records_every_change_and_forced_promotions(tmp_path):
    reg = Registry(Storage(str(tmp_path)), "m")
    for auc in (0.70, 0.60, 0.71):
        _register(reg, auc)
    promote(reg, 1, "production")
    promote(reg, 2, "production", force=True)
    promote(reg, 3, "production")
    reg.rollback("production")
    log = reg.alias_log("production")
    assert [(e["seq"], e["version"], e["previous"], e["event"]) for e in log] == [
        (1, 1, None, "promote"), (2, 2, 1, "force"), (3, 3, 2, "promote"), (4, 2, 3, "rollback")]
    assert log[1]["forced"] is True and log[2]["forced"] is False
    assert reg.aliases() == {"production": 2} and reg.alias_history("production") == [1]


def test_stale_compare_and_swap_is_refused(tmp_path):
    from rayline.registry.registry import AliasConflict

    reg = Registry(Storage(str(tmp_path)), "m")
    _register(reg, 0.7), _register(reg, 0.7)
    seen = reg.alias_state("production")
    reg.change_alias(seen, 1, "promote")
    with pytest.raises(AliasConflict):
        reg.change_alias(seen, 2, "promote")  # decided on a state that is no longer current
    assert reg.aliases() == {"production": 1} and len(reg.alias_log("production")) == 1


def test_aliases_written_before_the_log_still_read_and_roll_back(tmp_path):
    s = Storage(str(tmp_path))
    reg = Registry(s, "m")
    for auc in (0.7, 0.7, 0.7):
        _register(reg, auc)
    s.write_json({"version": 2, "history": [1]}, "models/m/aliases/production.json")  # old layout
    assert reg.aliases() == {"production": 2} and reg.resolve("production") == 2
    promote(reg, 3, "production")
    assert reg.alias_history("production") == [1, 2]
    assert reg.rollback("production") == 2 and reg.rollback("production") == 1


@pytest.mark.parametrize("alias", ["../evil", ".hidden", "a/b", "", "12", "latest", "x" * 65])
def test_alias_names_cannot_escape_the_alias_folder(tmp_path, alias):
    reg = Registry(Storage(str(tmp_path)), "m")
    _register(reg, 0.7)
    with pytest.raises(RegistryError, match="invalid alias name"):
        reg.set_alias(alias, 1)
    assert not (tmp_path / "evil").exists()


def test_sweep_removes_abandoned_staging_and_unfinished_versions_only(tmp_path):
    import time

    s = Storage(str(tmp_path))
    reg = Registry(s, "m", stale_after_s=3600)
    _register(reg, 0.7)
    old, young = int(time.time()) - 7200, int(time.time())
    s.write_bytes(b"w", f"models/m/.tmp-version-{old}-0123456789/weights.pt")     # crashed long ago
    s.write_bytes(b"w", f"models/m/.tmp-version-{young}-0123456789/weights.pt")   # a live writer
    s.write_bytes(str(old).encode(), "models/m/claims/2")
    s.write_bytes(b"half", "models/m/2/weights.pt")                                # publish died part-way
    s.write_bytes(str(time.time()).encode(), "models/m/claims/3")
    s.write_bytes(b"half", "models/m/3/weights.pt")                                # being published now
    assert reg.sweep() == ["2"]
    left = sorted(p.name for p in (tmp_path / "models/m").iterdir())
    assert left == [".tmp-version-%d-0123456789" % young, "1", "3", "claims"]
    assert _register(reg, 0.7).version == 4 and reg.versions() == [1, 4]


def _register_with_baseline(reg, metric, mode, value, baseline):
    return reg.register({"weights.pt": b"w"}, {"metric": metric, "mode": mode,
                                               "test": {metric: value, f"baseline_{metric}": baseline}}, {"run_name": "r"})


def test_no_version_is_promoted_unless_it_beats_the_trivial_model(tmp_path):
    reg = Registry(Storage(str(tmp_path)), "m")
    _register_with_baseline(reg, "auc", "max", 0.505, 0.5)     # v1: barely better than a coin
    _register_with_baseline(reg, "rmse", "min", 99.5, 100.0)   # v2: 0.5 % better than the mean
    _register_with_baseline(reg, "rmse", "min", 60.0, 100.0)   # v3: clearly better
    for v in (1, 2):
        with pytest.raises(RegistryError, match=rf"version {v}.*does not beat the trivial model"):
            promote(reg, v, "production", margin=0.01)         # the first version too
    assert reg.aliases() == {}
    assert promote(reg, 3, "staging", margin=0.01).forced is False
    p = promote(reg, 1, "production", margin=0.01, force=True)
    assert p.forced and reg.alias_log("production")[-1]["below_trivial"] is True
    assert reg.alias_log("production")[-1]["event"] == "force"
