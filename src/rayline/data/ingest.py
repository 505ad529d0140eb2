"""The data stage: raw tables in, model-ready Parquet + FeatureSpec + manifest out.

Two streaming Ray Data executions over the raw input, no staged copy of the joined rows:

1. read the primary table -> per batch: validate, broadcast-join the dimensions, split, gather
   the training rows' partial statistics -> statistics + quarantined rows
   (:class:`rayline.data.batch_steps.BatchProcessor`), written as small Parquet files;
2. driver merges the statistics into the FeatureSpec; read the primary table again -> the same
   (deterministic) validation, joins and split -> transform the clean rows with the spec ->
   model-ready Parquet partitioned by split.

Re-reading the compressed input costs less than writing and re-reading the joined, typed rows
(1.5x its size on disk, and encoded and decoded once more). Everything is written under a
temporary prefix and published at the end, keyed by a fingerprint of the inputs and of the
config's data section: a rerun with the same inputs reuses the published output.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import time
from collections import Counter
from typing import Callable

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from rayline import layout
from rayline.config import RaylineConfig
from rayline.data import sources as src_mod
from rayline.data.advice import SAMPLES, check_splits, identifier_like, mostly_rejected
from rayline.data.join import prepare_dimension
from rayline.data.split import SPLITS
from rayline.data.batch_steps import Q_PREFIX, READY_SPLIT_COL, STATS_COL, ReadyPass, StatisticsPass
from rayline.data.lookup_store import write_snapshot
from rayline.data.plan import IngestPlan, column_kinds, feature_constraints, lookup_fields, used_columns
from rayline.data.validate import QUARANTINE_SCHEMA, Failures, apply_rules, duplicate_mask
from rayline.data.dataset import (
    MANIFEST, SPEC_FILE, IngestResult, build_manifest, dataset_dir, load_ingest, mark_latest, open_published,
    plan_key,
)

__all__ = ["run_ingest", "IngestResult", "load_ingest"]  # the dataset's own names stay importable from here
from rayline.errors import InputError, failure_line
from rayline.runtime import ordered_data
from rayline.features.fit import PartialStats, build_spec
from rayline.storage import Storage

log = logging.getLogger(__name__)


def resolve_source(cfg: RaylineConfig, name: str, storage: Storage) -> src_mod.ResolvedSource:
    """A configured source's files, with the columns a CSV reads as text."""
    kinds = column_kinds(cfg, name)
    return src_mod.resolve(name, cfg.data.sources[name], storage, text_columns=kinds,
                           string_columns=[c for c, kind in kinds.items() if kind == "string"],
                           inferred_columns=used_columns(cfg, name) - set(kinds),
                           number_columns=[c for c, kind in kinds.items() if kind in ("float", "int")])


def sources_fingerprint(cfg: RaylineConfig, storage: Storage) -> str:
    """The input fingerprint an ingest of the sources as they are now would record (file
    listings, sizes and times; not the config): what `rayline watch` compares with the one
    production was trained on (its lineage's `data_fingerprint`) to see new data."""
    d = cfg.data
    resolved = {name: resolve_source(cfg, name, storage) for name in d.sources
                if name == d.primary or any(j.table == name for j in d.joins)}
    return plan_key(cfg, {name: r.fingerprint() for name, r in resolved.items()})[0]


def sources_time_range(cfg: RaylineConfig, storage: Storage) -> tuple | None:
    """(oldest, newest) value of the time split's column at the primary source, read as the
    ingest reads it (its rule's formats and zone), over the cluster; None when it holds none."""
    import pyarrow.compute as pc

    from rayline.features.contract import time_parsing
    from rayline.features.coerce import coerce

    d = cfg.data
    column = d.split.column
    rule = IngestPlan.compile(cfg).rules[column]
    primary = resolve_source(cfg, d.primary, storage)

    def bounds(batch: pa.Table) -> pa.Table:
        ts, _ = coerce(batch.column(column), "timestamp", time_parsing(rule))
        return pa.table({"lo": [pc.min(ts).as_py()], "hi": [pc.max(ts).as_py()]},
                        schema=pa.schema([("lo", ts.type), ("hi", ts.type)]))

    ds = src_mod.read_dataset(primary, columns=[column]).map_batches(bounds, batch_format="pyarrow")
    parts = list(ds.iter_batches(batch_format="pyarrow"))
    found = pa.concat_tables(parts) if parts else None
    if found is None or found.num_rows == 0 or pc.max(found.column("hi")).as_py() is None:
        return None
    return pc.min(found.column("lo")).as_py(), pc.max(found.column("hi")).as_py()


def run_ingest(cfg: RaylineConfig, storage: Storage, *, force: bool = False,
               progress: Callable[[str], None] = lambda msg: None) -> IngestResult:
    """Run (or reuse) the ingest of `cfg`. Needs a connected Ray (see rayline.runtime)."""
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    d = cfg.data
    resolved = {name: resolve_source(cfg, name, storage) for name in d.sources
                if name == d.primary or any(j.table == name for j in d.joins)}
    fingerprint, key = plan_key(cfg, {name: r.fingerprint() for name, r in resolved.items()})
    final = dataset_dir(cfg, key)
    if not force and storage.is_complete(final):
        try:
            reused = open_published(cfg, storage, key)
            progress(f"ingest: inputs and config unchanged, reusing {storage.uri(final)}")
            return reused
        except InputError as e:  # changed after publishing: rebuild rather than train on it
            progress(f"ingest: {e}; rebuilding it")

    storage.check_writable()  # named here, not as a failed read inside a Ray task
    primary = resolved[d.primary]
    plan = IngestPlan.compile(cfg)  # what the ingest's tasks receive, compiled once
    expected_rows = src_mod.check_files(primary, list(plan.required))
    if expected_rows == 0:
        raise InputError(f"source {d.primary!r}: the input has no rows ({', '.join(primary.files[:3])})")
    timings["check"] = time.perf_counter() - t0

    t = time.perf_counter()
    dims, dim_quarantine, dim_counts = _load_dimensions(cfg, resolved)
    timings["dimensions"] = time.perf_counter() - t

    storage.clean_stale(layout.datasets(cfg.name))
    tmp = storage.temp_dir(final)
    try:
        dim_rows = {name: c["read"] for name, c in dim_counts.items()}
        with ordered_data():
            spec, counts, by_rule, lookups = _execute(cfg, plan, storage, primary, dims, dim_quarantine, dim_rows,
                                                       tmp, progress, timings)
        rows_read = counts["read"]
        if expected_rows is not None and rows_read != expected_rows:
            raise InputError(f"source {d.primary!r}: read {rows_read} rows but the Parquet footers declare {expected_rows}")
        if rows_read == 0:
            raise InputError(f"source {d.primary!r}: the input has no rows ({', '.join(primary.files[:3])})")
        storage.write_bytes(spec.to_json().encode(), tmp, SPEC_FILE)
        timings["total"] = time.perf_counter() - t0
        sources = {n: {"files": len(r.files), "bytes": sum(r.sizes), "fingerprint": r.fingerprint(), "format": r.format}
                   for n, r in resolved.items()}
        manifest = build_manifest(cfg, key, fingerprint, sources, counts, dim_counts, by_rule, timings)
        manifest["lookups"] = lookups  # the snapshot serving and batch join and count with
        manifest["files"] = storage.checksums(tmp)  # every file of the dataset, verified when it is opened
        storage.write_json(manifest, tmp, MANIFEST)
        storage.publish(tmp, final)
    except BaseException:
        # Nothing half-written stays where a finished dataset is expected.
        try:
            storage.delete_dir(tmp)
        except Exception:  # noqa: BLE001 - the original error matters more
            log.warning("could not remove staging directory %s", storage.uri(tmp))
        raise
    mark_latest(cfg, storage, key)
    return IngestResult(key, storage.uri(final), False, manifest, spec)


def _load_dimensions(cfg: RaylineConfig, resolved) -> tuple[dict[int, pa.Table], list[pa.Table], dict]:
    """Read, validate and de-duplicate each dimension table once, on the driver."""
    d = cfg.data
    validated: dict[str, pa.Table] = {}
    quarantined: list[pa.Table] = []
    counts: dict[str, dict] = {}
    for name in dict.fromkeys(j.table for j in d.joins):
        joins = [j for j in d.joins if j.table == name]
        src_cfg = d.sources[name]
        required = set(src_cfg.columns) | {k for j in joins for k in j.keys.values()} | {c for j in joins for c in j.columns}
        src_mod.check_files(resolved[name], sorted(required))
        raw = src_mod.read_small_table(resolved[name])
        if raw.num_rows == 0:
            raise InputError(f"source {name!r}: the table has no rows ({', '.join(resolved[name].files[:3])})")
        failures = Failures(raw.num_rows)
        src_mod.unreadable_records(raw, failures)
        typed = apply_rules(raw, dict(src_cfg.columns), failures)
        keys = [list(j.keys.values()) for j in joins] + ([src_cfg.unique] if src_cfg.unique else [])
        for key in keys:
            dup = duplicate_mask(typed, key)
            failures.add(dup, "unique", ",".join(key), typed.column(key[0]).combine_chunks())
        validated[name] = typed.filter(pa.array(~failures.bad))
        q = failures.quarantine(raw, name, src_mod.PATH_COLUMN)
        quarantined.append(q)
        counts[name] = {"read": raw.num_rows, "clean": validated[name].num_rows, "quarantined": q.num_rows}
    prepared = {i: prepare_dimension(validated[j.table], j) for i, j in enumerate(d.joins)}
    return prepared, quarantined, counts


def _count_features(cfg, primary: src_mod.ResolvedSource) -> dict:
    """Count features (data/counts.py): one read of their key columns, partial counts per batch."""
    from rayline.data.counts import PartialCounts, finish, key_columns

    ds = src_mod.map_blocks(primary, PartialCounts(cfg.data.counts), cfg.data.block_rows, columns=key_columns(cfg))
    try:
        parts = ds.to_arrow_refs()
        import ray

        partial = pa.concat_tables(ray.get(parts), promote_options="permissive")
    except Exception as e:  # noqa: BLE001 - a missing key column or an unreadable file: say which
        raise _user_error(e, primary) from None
    return finish(cfg, partial)


def _execute(cfg, plan: IngestPlan, storage: Storage, primary, dims, dim_quarantine, dim_rows: dict, tmp: str, progress,
             timings):
    import ray

    d = cfg.data
    fs = storage.fs
    pass1_dir = storage.path(tmp, "pass1")
    if d.counts:
        t = time.perf_counter()
        progress(f"ingest: counting {', '.join(c.name for c in d.counts)} over all rows of {d.primary}")
        dims = {**dims, **_count_features(cfg, primary)}
        timings["counts"] = time.perf_counter() - t
    lookups = write_snapshot(storage, tmp, d.joins, d.counts, dims) if d.joins or d.counts else {}
    dims_ref = ray.put(dims) if dims else None

    # ---- pass 1: validate + join + split -> partial statistics and quarantined rows
    t = time.perf_counter()
    progress(f"ingest: pass 1/2 validate, join, split, gather statistics ({len(primary.files)} file(s) of {d.primary})")
    _map_and_write(primary, StatisticsPass(plan, dims_ref), pass1_dir, fs)
    timings["pass1_validate_join_split"] = time.perf_counter() - t

    # ---- fit: merge the partial statistics (one small JSON per batch) on the driver
    t = time.perf_counter()
    stats, rows_read, split_rows, outside = PartialStats(), 0, Counter(), 0
    split_classes: dict[str, Counter] = {}
    if fs.get_file_info(pass1_dir).type.name == "Directory":
        pass1 = pads.dataset(pass1_dir, filesystem=fs, format="parquet")
        texts = pass1.to_table(columns=[STATS_COL], filter=pads.field(STATS_COL).is_valid()).column(0).to_pylist()
        # Tasks finish in any order, and floating-point merges (and the sample's subsetting)
        # depend on it: merged in a canonical order, the same input fits the same spec.
        for text in sorted(texts):
            part = json.loads(text)
            rows_read += part.pop("rows_in")
            outside += part.pop("outside_window", 0)
            split_rows.update(part.pop("split_rows"))
            for name, classes in part.pop("split_classes", {}).items():
                split_classes.setdefault(name, Counter()).update(classes)
            stats = stats.merge(PartialStats.from_dict(part))
    if rows_read == 0:
        raise InputError(f"source {d.primary!r}: the input has no rows ({', '.join(primary.files[:3])})")
    spec = build_spec(stats, cfg, feature_constraints(cfg))
    spec = spec.model_copy(update=lookup_fields(cfg, src_mod.file_columns(primary)))
    timings["fit"] = time.perf_counter() - t
    clean = sum(split_rows.values())
    progress(f"ingest: {rows_read:,} rows read, {clean:,} clean, {rows_read - clean - outside:,} quarantined"
             + (f", {outside:,} outside the data window" if outside else "")
             + f" ({timings['pass1_validate_join_split']:.1f}s); statistics fitted on {split_rows.get('train', 0):,} training rows")

    # ---- quarantine: primary rows from pass 1 + dimension rows, one dataset
    t = time.perf_counter()
    q_counts, by_rule, samples = _write_quarantine(storage, tmp, pass1_dir, dim_quarantine)
    fs.delete_dir(pass1_dir)
    timings["quarantine"] = time.perf_counter() - t
    for line in mostly_rejected(cfg, by_rule, samples, {d.primary: rows_read, **dim_rows}) + \
            identifier_like(spec, split_rows.get("train", 0)):
        progress(f"ingest: warning: {line}")
    check_splits(cfg, rows_read - outside, split_rows, split_classes, by_rule, samples)

    # ---- pass 2: the same per-row work again, then transform the clean rows with the fitted spec
    t = time.perf_counter()
    progress("ingest: pass 2/2 transform and write model-ready Parquet")
    if sum(split_rows.values()):
        _map_and_write(primary, ReadyPass(plan, dims_ref, spec), storage.path(tmp, "ready"), fs,
                       partition_col=READY_SPLIT_COL, **READY_PARQUET_OPTIONS)
    timings["pass2_transform_write"] = time.perf_counter() - t
    # Both passes read the input: it must not have changed in between.
    if resolve_source(cfg, d.primary, storage).fingerprint() != primary.fingerprint():
        raise InputError(f"source {d.primary!r}: the input files changed while they were being ingested "
                         f"({primary.base}); nothing was published, run the ingest again")

    # ---- reconcile: count what was written, independently of the map's own bookkeeping
    written = {s: _count_rows(storage, tmp, f"ready/split={s}") for s in SPLITS}
    q_primary = q_counts.get(d.primary, 0)
    counts = {"read": rows_read, "clean": sum(written.values()), "quarantined": q_primary, **written}
    if d.split.train_from or d.split.until:
        counts["outside_window"] = outside
    if counts["read"] != counts["clean"] + counts["quarantined"] + outside:
        raise RuntimeError(f"reconciliation failed: rows read {counts['read']} != clean {counts['clean']} "
                           f"+ quarantined {counts['quarantined']} + outside the window {outside}; nothing was published")
    for s in SPLITS:
        if written[s] != split_rows.get(s, 0):
            raise RuntimeError(f"reconciliation failed for split {s}: wrote {written[s]} in pass 2, counted "
                               f"{split_rows.get(s, 0)} in pass 1 (did the input change during the run?)")
    return spec, counts, by_rule, lookups


# x_num/x_cat are dense numbers: a dictionary page never pays for itself there (measured: writes
# 20 % faster, files as large); the passthrough columns keep it.
READY_PARQUET_OPTIONS = {"use_dictionary": False}


def _map_and_write(primary: src_mod.ResolvedSource, step: StatisticsPass | ReadyPass, out: str, fs,
                   partition_col: str | None = None, **parquet_options) -> None:
    """Read the primary table, map `step` over it and write the result as Parquet under
    `out` (the same files for the same input: data/ordered_sink.py); a failed task becomes a
    message naming the broken input file, not a Ray traceback."""
    from rayline.data.ordered_sink import OrderedParquetSink

    plan = step.plan
    if isinstance(step, ReadyPass):
        # Pass 2 writes no quarantine, so it reads only what rules, joins, split and features
        # use (every file has these: check_files). Parquet then skips the other columns' pages.
        ds = src_mod.map_blocks(primary, step, plan.block_rows, columns=list(plan.required))
    else:
        ds = src_mod.map_blocks(primary, step, plan.block_rows,
                                path_column="path" if "path" in plan.required else src_mod.PATH_COLUMN)
    try:
        ds.write_datasink(OrderedParquetSink(out, fs, partition_col, **parquet_options))
    except Exception as e:  # noqa: BLE001 - turn task failures into a message with the cause
        raise _user_error(e, primary) from None


def _write_quarantine(storage: Storage, tmp: str, pass1_dir: str,
                      dim_quarantine: list[pa.Table]) -> tuple[Counter, Counter, dict[str, list[str]]]:
    """Stream quarantined rows into <dataset>/quarantine/ (one Parquet file set, all tables);
    count them per table and per rule, and keep a few distinct values per rule (for advice)."""
    fs = storage.fs
    out_dir = storage.path(tmp, "quarantine")
    fs.create_dir(out_dir, recursive=True)
    per_table, by_rule = Counter(), Counter()
    samples: dict[str, list[str]] = {}
    names = [c.name for c in QUARANTINE_SCHEMA]
    with fs.open_output_stream(f"{out_dir}/part-0000.parquet") as f, pq.ParquetWriter(f, QUARANTINE_SCHEMA) as w:
        batches: list = []
        if fs.get_file_info(pass1_dir).type.name == "Directory":
            rows = pads.dataset(pass1_dir, filesystem=fs, format="parquet")
            batches = (pa.Table.from_batches([b]).rename_columns(names)
                       for b in rows.to_batches(columns=[Q_PREFIX + n for n in names],
                                                filter=pads.field(Q_PREFIX + "table").is_valid()))
        for tbl in itertools.chain(batches, dim_quarantine):
            if tbl.num_rows == 0:
                continue
            tbl = tbl.cast(QUARANTINE_SCHEMA)
            w.write_table(tbl)
            for table, rule, column, value in zip(tbl.column("table").to_pylist(), tbl.column("rule").to_pylist(),
                                                  tbl.column("column").to_pylist(), tbl.column("value").to_pylist()):
                key = f"{table}.{column}:{rule}"
                per_table[table] += 1
                by_rule[key] += 1
                seen = samples.setdefault(key, [])
                if len(seen) < SAMPLES and value is not None and value not in seen:
                    seen.append(value)
    return per_table, by_rule, samples


def _count_rows(storage: Storage, tmp: str, rel: str) -> int:
    path = storage.path(tmp, rel)
    if storage.fs.get_file_info(path).type.name != "Directory":
        return 0
    return sum(storage.parquet_rows(storage.list_files(tmp, rel, suffix=".parquet")))


def _user_error(e: Exception, src: src_mod.ResolvedSource) -> Exception:
    """Ray wraps task errors and drops Arrow's reason; find the file and re-read it to say why."""
    cause = getattr(e, "cause", None) or e.__cause__
    if isinstance(cause, InputError):
        return cause
    text = str(e)
    named = re.search(r"Failed to read \w+ file: (\S+?)\.?\s", text)
    detail = src_mod.diagnose(src, named.group(1) if named else None)
    if detail:
        return InputError(detail)
    return InputError(f"source {src.name!r}: reading or processing failed: {failure_line(e)}")
