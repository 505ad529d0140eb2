"""Model quality on the default config's time split: rayline's model families vs scikit-learn's
HistGradientBoosting, on the same model-ready features, in one run.

Trains the default MLP and the default XGBoost model through rayline's pipeline (Ray Train,
evaluation on the test split: Nov-Dec 2013, never seen in training or model selection), then fits
HistGradientBoostingClassifier (300 iterations, categorical codes as native categoricals where
it allows: at most 255 categories) on the same train split and scores the same test split.
Then runs `rayline tune` (Ray Tune, ASHA) over the XGBoost family with a few trials and
scores its best on the same test split. Prints a table, then one JSON line; `best` is the best
of the three rayline rows.

    python benchmarks/quality.py [--trials 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import numpy as np  # noqa: E402
import pyarrow.dataset as pads  # noqa: E402

from rayline.config import load_config  # noqa: E402
from rayline.model.metrics import log_loss, roc_auc  # noqa: E402
from rayline.features.spec import model_inputs_from_table  # noqa: E402
from rayline.storage import Storage  # noqa: E402

CONFIG = ROOT / "configs" / "flights.yaml"


def hist_gradient_boosting(ingest) -> dict:
    from sklearn.ensemble import HistGradientBoostingClassifier

    def load(split):
        t = pads.dataset(ingest.split_uri(split), format="parquet", partitioning=None).to_table(columns=["x_num", "x_cat", "y"])
        num, cat = model_inputs_from_table(t)
        return np.hstack([num, cat.astype(np.float32)]), t.column("y").to_numpy()

    (x, y), (xt, yt) = load("train"), load("test")
    n_num = len(ingest.spec.numeric_inputs)
    categorical = [False] * n_num + [c.cardinality <= 255 for c in ingest.spec.categorical]
    t = time.perf_counter()
    hgb = HistGradientBoostingClassifier(max_iter=300, categorical_features=np.array(categorical), early_stopping=False,
                                         random_state=0).fit(x, y)
    p = hgb.predict_proba(xt)[:, 1]
    return {"auc": roc_auc(yt, p), "log_loss": log_loss(yt, p), "seconds": round(time.perf_counter() - t, 1)}


def main() -> None:
    import ray

    from rayline.data import run_ingest
    from rayline.pipeline import train_and_register, tune_and_register

    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=3)
    args = ap.parse_args()
    from rayline.runtime import configure_data_context

    work = Path(tempfile.mkdtemp(prefix="rayline-quality-"))
    try:
        from rayline.runtime import embedded_env
        os.environ.update({k: v for k, v in embedded_env().items() if k not in os.environ})  # as rayline's embedded Ray
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        configure_data_context()
        base = load_config(CONFIG, [f"storage.root={work}"])
        storage = Storage(base.storage.root)
        ingest = run_ingest(base, storage)
        rows = {}
        for family in ("mlp", "xgboost"):
            cfg = load_config(CONFIG, [f"storage.root={work}", f"train.model.family={family}"])
            t = time.perf_counter()
            out = train_and_register(cfg, storage, ingest=ingest)
            test = out.version.metrics["test"]
            rows[family] = {"auc": test["auc"], "log_loss": test["log_loss"], "seconds": round(time.perf_counter() - t, 1)}
        t = time.perf_counter()
        tuned = tune_and_register(load_config(CONFIG, [f"storage.root={work}"]), storage, trials=args.trials)
        test = tuned.version.metrics["test"]
        rows[f"xgboost tuned ({args.trials} trials)"] = {"auc": test["auc"], "log_loss": test["log_loss"],
                                                         "seconds": round(time.perf_counter() - t, 1)}
        rows["hgb (sklearn, 300 it.)"] = hist_gradient_boosting(ingest)
        base_rate = ingest.spec.label.train_mean
        print(f"test split: {ingest.manifest['rows']['test']:,} flights, base rate {base_rate:.3f}")
        print(f"{'model':<24}{'test AUC':>10}{'log loss':>10}{'seconds':>9}")
        for name, r in rows.items():
            print(f"{name:<24}{r['auc']:>10.4f}{r['log_loss']:>10.4f}{r['seconds']:>9.1f}")
        tuned_key = f"xgboost tuned ({args.trials} trials)"
        best = max(("mlp", "xgboost", tuned_key), key=lambda k: rows[k]["auc"])
        hgb = rows["hgb (sklearn, 300 it.)"]
        print(json.dumps({"name": "quality", "best": best, "best_auc": round(rows[best]["auc"], 4),
                          "mlp_auc": round(rows["mlp"]["auc"], 4), "xgboost_auc": round(rows["xgboost"]["auc"], 4),
                          "hgb_auc": round(hgb["auc"], 4), "best_log_loss": round(rows[best]["log_loss"], 4),
                          "best_minus_hgb": round(rows[best]["auc"] - hgb["auc"], 4),
                          "tuned_auc": round(rows[tuned_key]["auc"], 4), "trials": args.trials}))
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
