"""What the endpoint answered, what turned out true, and how each version fares on live traffic.

The prediction log holds one row per answered record (request id, its index in the request,
version, role, snapshot, a hash of the inputs, score, label, latency, status); outcomes posted
later (`POST /outcomes`, `rayline outcomes`) join it on (request id, index). `live_report`
summarizes a window per version and role: requests, errors, latency, the score distribution,
and where outcomes arrived AUC and log loss (binary), RMSE (regression) or accuracy (multiclass)
with 95 % confidence intervals; shadow rows are compared with the live answer to the same record.
Pure code over tables: `GET /live` and `rayline live` call the same function.
"""

from __future__ import annotations

import hashlib
import json
import math
import re

import numpy as np
import pyarrow as pa

from rayline.model.metrics import EPS, roc_auc

LIVE, SHADOW, PINNED = "live", "shadow", "pinned"
Z95 = 1.959964

PREDICTION_SCHEMA = pa.schema([
    ("ts", pa.float64()), ("request_id", pa.string()), ("index", pa.int32()), ("version", pa.int64()),
    ("role", pa.string()), ("alias", pa.string()), ("snapshot", pa.string()), ("inputs_hash", pa.string()),
    ("score", pa.float64()), ("label", pa.string()), ("latency_ms", pa.float32()), ("status", pa.int16()),
])
OUTCOME_SCHEMA = pa.schema([("ts", pa.float64()), ("request_id", pa.string()), ("index", pa.int32()),
                            ("outcome", pa.float64())])
QUARANTINE_SCHEMA = pa.schema([("ts", pa.float64()), ("row", pa.int64()), ("record", pa.string()), ("reason", pa.string())])
_REQUEST_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


def inputs_hash(record: dict) -> str:
    """Of the record as the client sent it (keys sorted): equal inputs, equal hashes."""
    text = json.dumps(record, sort_keys=True, separators=(",", ":"), default=str, ensure_ascii=False)
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


def prediction_chunk(ts: float, rid: str, version: int, role: str, alias: str, snapshot: str | None,
                     records: list[dict], scores, labels, latency_ms: float | None, status: int = 200) -> dict:
    """One request's answer, buffered as is: `prediction_columns` expands it in the flushing thread."""
    return {"ts": ts, "rid": rid, "version": version, "role": role, "alias": alias, "snapshot": snapshot,
            "records": records, "scores": scores, "labels": labels, "latency_ms": latency_ms, "status": status}


def prediction_columns(chunks: list[dict]) -> dict:
    cols: dict[str, list] = {name: [] for name in PREDICTION_SCHEMA.names}
    for c in chunks:
        n = len(c["records"])
        scores = [None] * n if c["scores"] is None else [float(s) for s in c["scores"]]
        labels = [None] * n if c["labels"] is None else [None if y is None else str(y) for y in c["labels"]]
        cols["ts"] += [c["ts"]] * n
        cols["request_id"] += [c["rid"]] * n
        cols["index"] += range(n)
        cols["version"] += [c["version"]] * n
        cols["role"] += [c["role"]] * n
        cols["alias"] += [c["alias"]] * n
        cols["snapshot"] += [c["snapshot"]] * n
        # the shadow's rows join the live ones on (request id, index): their inputs are hashed once, there
        cols["inputs_hash"] += [inputs_hash(r) if isinstance(r, dict) and c["role"] != "shadow" else None
                                for r in c["records"]]
        cols["score"] += scores
        cols["label"] += labels
        cols["latency_ms"] += [c["latency_ms"]] * n
        cols["status"] += [c["status"]] * n
    return cols


def scores_of(task: str, preds: np.ndarray) -> np.ndarray:
    """One number per prediction: the probability (binary), the value (regression), the top
    class's probability (multiclass)."""
    return preds.max(axis=1) if preds.ndim == 2 else preds


# ---------------------------------------------------------------------------- outcomes
def outcome_value(task: str, classes: list[str] | None, value) -> float | None:
    """A true label as the log stores it, or None if it is not one for this task: 0/1 or
    true/false (binary), a finite number (regression), a class name (multiclass: its index)."""
    if task == "binary":
        if isinstance(value, bool) or value in (0, 1):
            return float(value)
        return None
    if task == "regression":
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        return None
    return float((classes or []).index(value)) if isinstance(value, str) and value in (classes or []) else None


def expected_outcome(task: str, classes: list[str] | None) -> str:
    return {"binary": "0, 1, true or false", "regression": "a finite number"}.get(
        task, f"one of the classes {classes}")


def check_outcomes(items: list, task: str, classes: list[str] | None, now: float) -> tuple[dict, list[dict]]:
    """Outcome records -> (columns of the valid ones, one error per invalid one naming its
    position and field). Each record: {"request_id": str, "index": int >= 0 (default 0), "label": ...}."""
    cols: dict[str, list] = {"ts": [], "request_id": [], "index": [], "outcome": []}
    errors = []
    for i, item in enumerate(items):
        where = f"outcomes[{i}]"
        if not isinstance(item, dict):
            errors.append({"row": i, "field": where, "message": f"{where} must be an object, got {type(item).__name__}"})
            continue
        unknown = sorted(set(item) - {"request_id", "index", "label"})
        rid, index, label = item.get("request_id"), item.get("index", 0), item.get("label")
        if isinstance(index, float) and index.is_integer():
            index = int(index)  # 1.0 is the integer 1 in JSON
        if unknown:
            msg = f"{where} has unknown field(s) {unknown[:5]}: expected request_id, index, label"
            errors.append({"row": i, "field": f"{where}.{unknown[0]}", "message": msg})
        elif not isinstance(rid, str) or not _REQUEST_ID.match(rid):
            errors.append({"row": i, "field": f"{where}.request_id", "message": f"{where}.request_id must be the "
                           "request id an answer carried (1-64 letters, digits or -_.:)"})
        elif isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < 2 ** 31:
            errors.append({"row": i, "field": f"{where}.index", "message": f"{where}.index must be the record's "
                           "position in its request (an integer >= 0)"})
        elif (value := outcome_value(task, classes, label)) is None:
            errors.append({"row": i, "field": f"{where}.label", "message": f"{where}.label must be "
                           f"{expected_outcome(task, classes)}, got {json.dumps(label, default=str)[:60]}"})
        else:
            cols["ts"].append(now)
            cols["request_id"].append(rid)
            cols["index"].append(index)
            cols["outcome"].append(value)
    return cols, errors


# ---------------------------------------------------------------------------- the report
def auc_interval(y: np.ndarray, p: np.ndarray) -> dict:
    """AUC with a 95 % interval (Hanley & McNeil's standard error)."""
    a, n1, n0 = roc_auc(y, p), int(y.sum()), int(len(y) - y.sum())
    if math.isnan(a):
        return {"auc": None, "auc_ci95": None}
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    se = math.sqrt(max(0.0, (a * (1 - a) + (n1 - 1) * (q1 - a * a) + (n0 - 1) * (q2 - a * a)) / (n1 * n0)))
    return {"auc": a, "auc_ci95": [max(0.0, a - Z95 * se), min(1.0, a + Z95 * se)]}


def _mean_interval(x: np.ndarray) -> tuple[float, list[float]]:
    m = float(x.mean())
    se = float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else float("inf")
    return m, [m - Z95 * se, m + Z95 * se]


def outcome_metrics(task: str, classes: list[str] | None, y: np.ndarray, score: np.ndarray, label: np.ndarray) -> dict:
    n = len(y)
    if n == 0:
        return {"outcomes": 0}
    out: dict = {"outcomes": n}
    if task == "binary":
        p = np.clip(score, EPS, 1 - EPS)
        losses = -(y * np.log(p) + (1 - y) * np.log(1 - p))
        ll, ci = _mean_interval(losses)
        out.update(auc_interval(y, score), log_loss=ll, log_loss_ci95=ci, positive_rate=float(y.mean()))
    elif task == "regression":
        mse, (lo, hi) = _mean_interval((score - y) ** 2)
        out.update(rmse=math.sqrt(mse), rmse_ci95=[math.sqrt(max(lo, 0.0)), math.sqrt(hi) if math.isfinite(hi) else None])
    else:
        names = np.asarray(classes or [], dtype=object)[y.astype(np.int64)]
        acc, (lo, hi) = _mean_interval((label == names).astype(np.float64))
        out.update(accuracy=acc, accuracy_ci95=[max(lo, 0.0), min(hi, 1.0)])
    return out


def live_report(preds: pa.Table | None, outcomes: pa.Table | None, task: str, classes: list[str] | None,
                since: float, now: float) -> dict:
    """Per version and role over [since, now]: traffic, errors, latency, scores, outcome metrics,
    and for shadow versions their agreement with the live answer to the same records."""

    report: dict = {"window_s": round(now - since), "since": since, "versions": [], "shadow_agreement": []}
    if preds is None or preds.num_rows == 0:
        return report
    df = preds.to_pandas()
    df = df[(df["ts"] >= since) & (df["ts"] <= now)]
    if outcomes is not None and outcomes.num_rows:
        o = outcomes.to_pandas().sort_values("ts").drop_duplicates(["request_id", "index"], keep="last")
        df = df.merge(o[["request_id", "index", "outcome"]], on=["request_id", "index"], how="left")
    else:
        df = df.assign(outcome=np.nan)
    for (version, role), g in df.groupby(["version", "role"], sort=True):
        reqs = g.drop_duplicates("request_id")
        ok = g[g["status"] < 500]
        entry: dict = {"version": int(version), "role": role, "aliases": sorted(set(g["alias"].dropna())),
                       "snapshots": sorted(set(g["snapshot"].dropna())), "requests": int(len(reqs)),
                       "records": int(len(g)), "errors": int((reqs["status"] >= 500).sum()),
                       "error_rate": float((reqs["status"] >= 500).mean())}
        lat = reqs["latency_ms"].dropna().to_numpy()
        if len(lat):
            entry["latency_ms"] = {"p50": float(np.percentile(lat, 50)), "p95": float(np.percentile(lat, 95)),
                                   "p99": float(np.percentile(lat, 99))}
        s = ok["score"].dropna().to_numpy()
        if len(s):
            entry["score"] = {"mean": float(s.mean()), "p10": float(np.percentile(s, 10)), "p50": float(np.percentile(s, 50)),
                              "p90": float(np.percentile(s, 90))}
        known = ok[ok["outcome"].notna() & ok["score"].notna()]
        entry.update(outcome_metrics(task, classes, known["outcome"].to_numpy(np.float64),
                                     known["score"].to_numpy(np.float64), known["label"].to_numpy(object)))
        report["versions"].append(entry)
    live = df[(df["role"] != SHADOW) & (df["status"] < 500)][["request_id", "index", "version", "score", "label"]]
    shadow = df[(df["role"] == SHADOW) & (df["status"] < 500)]
    for version, g in shadow.groupby("version", sort=True):
        both = g.merge(live, on=["request_id", "index"], suffixes=("", "_live"))
        if not len(both):
            continue
        diff = (both["score"] - both["score_live"]).abs()
        report["shadow_agreement"].append({
            "version": int(version), "against_versions": sorted(int(v) for v in set(both["version_live"])),
            "records": int(len(both)), "label_agreement": float((both["label"] == both["label_live"]).mean()),
            "mean_abs_score_diff": float(diff.mean()), "max_abs_score_diff": float(diff.max())})
    return report
