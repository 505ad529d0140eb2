"""Answering many concurrent requests with one contract check, one transform and one forward
pass per model version, each request still judged by its own rows alone."""

from __future__ import annotations

import json
import logging
from functools import partial
from typing import Any, Callable

import numpy as np
import pyarrow as pa

from rayline.features.lookups import missed_per_row
from rayline.features.spec import ModelInputs
from rayline.model.artifact import LoadedModel
from rayline.serve.monitor import DriftTracker, ServeMetrics
from rayline.serve.options import REPLICA_LOG
from rayline.serve.schema import verdict_error

# one request: (model version, its model, its records, whether it came as {"instances": [...]},
# whether it asked for explanations)
Item = tuple[int, LoadedModel, list[dict], bool, bool]
log = logging.getLogger(REPLICA_LOG)


def predict_items(items: list[Item], drift: DriftTracker | None = None, metrics: ServeMetrics | None = None,
                  later: list[Callable[[], None]] | None = None) -> list[Any]:
    """Per item: (predictions, version, its model inputs), a RequestError (its own invalid rows),
    or the exception its rows caused. The inputs (views into the batch's arrays) let a shadow
    version with the same features score the request without checking and transforming it again.

    Verdicts are per row, so one request's invalid or oddly typed values give it a 4xx and change
    nothing for the others (the checked columns have one schema whatever was sent). If the
    batched step still fails, each request is retried alone and only the one that breaks fails.

    `later`: where the drift counts and metrics of the answered requests go, as calls to make
    once the answers are sent (the replica's lone requests wait ~0.1 ms less); None: counted here.
    """
    out: list[Any] = [None] * len(items)
    groups: dict[tuple, list[int]] = {}
    for i, item in enumerate(items):  # versions with the same features share the check, lookups and transform
        groups.setdefault(item[1].features_key, []).append(i)
    for idx in groups.values():
        counts: list[Callable[[], None]] = []
        try:
            _predict_group(items, idx, out, drift, metrics, counts)
        except Exception:  # noqa: BLE001 - isolate the culprit
            counts = []  # what the failed attempt counted is counted again by the retries
            for i in idx:
                try:
                    _predict_group(items, [i], out, drift, metrics, counts)
                except Exception as e:  # noqa: BLE001
                    out[i] = e
        if later is None:
            run_counts(counts)
        else:
            later.extend(counts)
    return out


def run_counts(counts: list[Callable[[], None]]) -> None:
    """Make the counting calls `predict_items` left; one that fails is logged, never raised (the
    answers are given: drift and metrics are advisory)."""
    for count in counts:
        try:
            count()
        except Exception as e:  # noqa: BLE001
            log.warning(json.dumps({"event": "counting_failed", "error": f"{type(e).__name__}: {str(e)[:200]}"}))


def _count(drift: DriftTracker | None, metrics: ServeMetrics | None, v: int, preds: np.ndarray, prepared,
           inputs: ModelInputs, missed: dict, misses: dict | None) -> None:
    """One version's answers into the drift counts (`drift`: the primary version's, once per
    record) and the metrics (`misses`: a record's lookup misses, counted once)."""
    outside = drift.observe(prepared.rows, inputs, missed, prepared.values) if drift is not None else []
    if metrics is not None:
        metrics.predicted(v, preds, outside, misses)


def _predict_group(items: list[Item], idx: list[int], out: list, drift: DriftTracker | None,
                   metrics: ServeMetrics | None, counts: list) -> None:
    """Requests whose models share features: one contract check, one lookup and transform, then
    one forward pass per version."""
    model = items[idx[0]][1]
    records = [r for i in idx for r in items[i][2]]
    table, failures = model.contract.check_records(records)
    keep, start, answered = [], 0, []
    for i in idx:
        n, batched = len(items[i][2]), items[i][3]
        error = verdict_error(model.contract, failures, start, n, batched)
        if error is None:
            keep.append(np.arange(start, start + n))
            answered.append(i)
        else:
            out[i] = error
        start += n
    if not answered:
        return
    rows = np.concatenate(keep)
    table = table if len(rows) == table.num_rows else table.take(pa.array(rows))
    named = set().union(*(r for i in answered for r in items[i][2]))  # the fields the records name
    prepared = model.features(table, named)  # the lookups (joins, counts), then the transform
    inputs, missed = prepared.inputs, prepared.missed
    rows_of, start = {}, 0
    for i in answered:
        rows_of[i] = (start, start + len(items[i][2]))
        start += len(items[i][2])
    missing = missed_per_row(missed, start)
    # drift: counted once per record, against the primary version's statistics (its spec object)
    observe = drift is not None and any(items[i][1].spec is drift.spec for i in answered)
    misses, first = {name: int(np.count_nonzero(m)) for name, m in missed.items()}, True
    for v in dict.fromkeys(items[i][0] for i in answered):
        mine = [i for i in answered if items[i][0] == v]
        vmodel = items[mine[0]][1]
        sel = np.concatenate([np.arange(*rows_of[i]) for i in mine])
        whole = len(mine) == len(answered)
        x = inputs if whole else ModelInputs(num=inputs.num[sel], cat=inputs.cat[sel])
        preds = vmodel.predict_inputs(x)
        if not np.isfinite(preds).all():
            raise ValueError("the model produced a non-finite prediction")
        counts.append(partial(_count, drift if observe else None, metrics, v, preds, prepared, inputs, missed,
                              misses if first else None))
        observe = first = False
        _answer(vmodel, v, items, mine, rows_of, sel, x, preds, missing, out)


def _answer(model: LoadedModel, v: int, items: list[Item], mine: list[int], rows_of: dict, sel: np.ndarray,
            x: ModelInputs, preds: np.ndarray, missing: list, out: list) -> None:
    """One version's requests: predictions, missed lookups and (where asked) explanations."""
    local, at = {}, 0
    for i in mine:
        n = rows_of[i][1] - rows_of[i][0]
        local[i] = (at, at + n)
        at += n
    # explanations only for the rows of the requests that asked (TreeSHAP or IG costs more than the prediction)
    wanted = [i for i in mine if items[i][4]]
    explained = None
    if wanted:
        pick = np.concatenate([np.arange(*local[i]) for i in wanted])
        explained = model.explain(ModelInputs(num=x.num[pick], cat=x.cat[pick]))
    at_e = 0
    for i in mine:
        lo, hi = local[i]
        answer = format_predictions(model, preds[lo:hi])
        for a, names in zip(answer, missing[rows_of[i][0]:rows_of[i][1]]):
            if names:
                a["lookups_missed"] = names  # answered all the same: those columns count as missing
        if items[i][4]:
            for a, e in zip(answer, explained.records(at_e, at_e + hi - lo)):
                a["explanation"] = e
            at_e += hi - lo
        out[i] = (answer, v, ModelInputs(num=x.num[lo:hi], cat=x.cat[lo:hi]))


def score_inputs(v: int, model: LoadedModel, inputs: list[ModelInputs]) -> list[tuple[list[dict], int]]:
    """Requests already checked and transformed (by a version with the same features and lookup
    snapshot): one forward pass for all, an answer per request."""
    num = np.concatenate([x.num for x in inputs])
    cat = np.concatenate([x.cat for x in inputs])
    preds = model.predict_inputs(ModelInputs(num=num, cat=cat))
    if not np.isfinite(preds).all():
        raise ValueError("the model produced a non-finite prediction")
    out, at = [], 0
    for x in inputs:
        out.append((format_predictions(model, preds[at:at + len(x)]), v))
        at += len(x)
    return out


def format_predictions(model: LoadedModel, preds: np.ndarray) -> list[dict]:
    """The answer per record; the label at the model's own threshold (as batch inference writes it)."""
    task, labels = model.spec.label.task, model.labels(preds)
    if task == "binary":
        return [{"probability": float(p), "label": int(y)} for p, y in zip(preds, labels)]
    if task == "multiclass":
        classes = model.spec.label.classes or []
        return [{"probabilities": dict(zip(classes, map(float, p))), "label": y} for p, y in zip(preds, labels)]
    return [{"value": float(p)} for p in preds]
