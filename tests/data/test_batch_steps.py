"""The ingest's pure Arrow parts without a cluster: file checks before any Ray work, and the
per-batch steps of both passes (validate, join, split, statistics; then the model-ready rows)."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rayline.config import config_from_dict
from rayline.data import sources as src_mod
from rayline.data.batch_steps import Q_PREFIX, READY_SPLIT_COL, STATS_COL, ReadyPass, StatisticsPass
from rayline.data.plan import IngestPlan, feature_constraints
from rayline.data.ingest import _load_dimensions
from rayline.errors import InputError
from rayline.features.fit import PartialStats, build_spec
from rayline.storage import Storage
from tests.conftest import small_config, small_tables, write_tables


def _setup(tmp_path, fmt="parquet", n=400):
    tables = small_tables(n)
    write_tables(tables, tmp_path / "data", fmt)
    cfg = config_from_dict(small_config(tmp_path / "data", tmp_path / "root", fmt=fmt))
    storage = Storage(cfg.storage.root)
    resolved = {name: src_mod.resolve(name, s, storage) for name, s in cfg.data.sources.items()}
    return cfg, resolved, tables


# ------------------------------------------------------------------ file checks
def test_whole_file_problems_are_named_before_any_work(tmp_path):
    cfg, resolved, _ = _setup(tmp_path)
    trips = resolved["trips"]
    assert src_mod.check_files(trips, ["trip_id", "distance"]) == 400     # Parquet footers give the row count
    with pytest.raises(InputError, match=r"trips\.parquet lacks required column\(s\) \['nope'\]"):
        src_mod.check_files(trips, ["nope"])
    path = tmp_path / "data" / "trips.parquet"
    path.write_bytes(path.read_bytes()[:200])                              # truncated: no footer
    with pytest.raises(InputError, match="trips.parquet is not a readable Parquet file"):
        src_mod.check_files(trips, ["trip_id"])


@pytest.mark.parametrize("content, fragment", [
    (b"", "0-byte|empty|no header"),
    (b"\n1,2\n", "has no header line"),
])
def test_csv_without_a_usable_header_is_refused(tmp_path, content, fragment):
    cfg, _, _ = _setup(tmp_path, fmt="csv")
    (tmp_path / "data" / "trips.csv").write_bytes(content)
    with pytest.raises(InputError, match=fragment):
        src_mod.check_files(src_mod.resolve("trips", cfg.data.sources["trips"], Storage(cfg.storage.root)), ["trip_id"])


def test_json_must_hold_objects(tmp_path):
    cfg, _, _ = _setup(tmp_path, fmt="json")
    (tmp_path / "data" / "trips.jsonl").write_text("[1, 2]\n")
    with pytest.raises(InputError, match=r"trips.jsonl holds no JSON object among its first records"):
        src_mod.check_files(src_mod.resolve("trips", cfg.data.sources["trips"], Storage(cfg.storage.root)), ["trip_id"])


def test_a_missing_path_names_it(tmp_path):
    cfg, _, _ = _setup(tmp_path)
    raw = small_config(tmp_path / "data", tmp_path / "root", fmt="parquet")
    raw["data"]["sources"]["trips"]["path"] = str(tmp_path / "nowhere.parquet")
    cfg = config_from_dict(raw)
    with pytest.raises(InputError, match="nowhere.parquet"):
        src_mod.resolve("trips", cfg.data.sources["trips"], Storage(cfg.storage.root))


# ------------------------------------------------------------------ the per-batch steps
def _with_bad_rows(table: pa.Table) -> pa.Table:
    bad = table.slice(0, 3).to_pylist()
    bad[0]["distance"] = -5.0        # below the rule's min
    bad[1]["station"] = "ZZZ"        # not an allowed value
    bad[2]["trip_id"] = None         # required
    rows = pa.Table.from_pylist(bad, schema=table.schema)
    return pa.concat_tables([table, rows]).append_column(src_mod.PATH_COLUMN, pa.array(["f.parquet"] * (table.num_rows + 3)))


def test_pass_one_gives_statistics_and_every_bad_row_with_its_reason(tmp_path):
    cfg, resolved, tables = _setup(tmp_path)
    dims, dim_q, _ = _load_dimensions(cfg, resolved)
    batch = _with_bad_rows(pq.read_table(tmp_path / "data" / "trips.parquet"))
    out = StatisticsPass(IngestPlan.compile(cfg), dims)(batch)
    stats = json.loads(out.column(STATS_COL)[0].as_py())
    assert stats["rows_in"] == 403 and sum(stats["split_rows"].values()) == 400     # 3 bad rows: no split
    q = out.slice(1)
    assert q.num_rows == 3 and sorted(q.column(Q_PREFIX + "rule").to_pylist()) == ["allowed", "not_null", "range"]
    assert set(q.column(Q_PREFIX + "column").to_pylist()) == {"distance", "station", "trip_id"}
    assert set(q.column(Q_PREFIX + "source_file").to_pylist()) == {"f.parquet"}
    # the same statistics from one batch or from two halves merged (partial aggregates add up)
    plan = IngestPlan.compile(cfg)
    halves = [StatisticsPass(plan, dims)(batch.slice(0, 200)), StatisticsPass(plan, dims)(batch.slice(200))]
    merged = PartialStats()
    for h in halves:
        part = json.loads(h.column(STATS_COL)[0].as_py())
        assert part.pop("rows_in") in (200, 203)
        part.pop("split_rows")
        merged = merged.merge(PartialStats.from_dict(part))
    whole = {k: v for k, v in stats.items() if k not in ("rows_in", "split_rows")}
    spec_whole = build_spec(PartialStats.from_dict(whole), cfg, feature_constraints(cfg))
    spec_halves = build_spec(merged, cfg, feature_constraints(cfg))
    for a, b in zip(spec_whole.numeric, spec_halves.numeric):
        assert a.name == b.name and a.mean == pytest.approx(b.mean) and a.std == pytest.approx(b.std)


def test_pass_two_writes_only_clean_rows_in_the_model_ready_layout(tmp_path):
    cfg, resolved, _ = _setup(tmp_path)
    dims, _, _ = _load_dimensions(cfg, resolved)
    batch = _with_bad_rows(pq.read_table(tmp_path / "data" / "trips.parquet"))
    plan = IngestPlan.compile(cfg)
    stats = json.loads(StatisticsPass(plan, dims)(batch).column(STATS_COL)[0].as_py())
    split_rows = stats.pop("split_rows")
    stats.pop("rows_in")
    spec = build_spec(PartialStats.from_dict(stats), cfg, feature_constraints(cfg))
    ready = ReadyPass(plan, dims, spec)(batch.drop_columns([src_mod.PATH_COLUMN]))
    assert ready.num_rows == 400 and {"x_num", "x_cat", "y", READY_SPLIT_COL} <= set(ready.column_names)
    counts = {s: int(np.sum(np.array(ready.column(READY_SPLIT_COL).to_pylist()) == s)) for s in split_rows}
    assert counts == split_rows                                           # pass 2 agrees with pass 1's split
    assert set(ready.column("trip_id").to_pylist()) == set(range(400))   # the passthrough key, bad rows gone
