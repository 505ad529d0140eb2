"""The prediction and outcome logs (bounded, rotated, a write failure loses nothing already
buffered) and the live report (outcomes joined back, per-version metrics, shadow agreement)."""

import numpy as np
import pyarrow as pa
import pytest

from rayline.config import PredictionLogConfig
from rayline.serve.live import check_outcomes, inputs_hash, live_report, prediction_chunk, prediction_columns
from rayline.serve.live_logs import LiveLogs
from rayline.serve.partlog import part_time
from rayline.storage import Storage


class Clock:
    def __init__(self):
        self.t = 1_700_000_000.0

    def __call__(self):
        return self.t


def _logs(tmp_path, clock, **cfg):
    logs = LiveLogs.at(Storage(str(tmp_path)), "m", "app", PredictionLogConfig(**cfg), "replica-1")
    logs.predictions.clock = logs.outcomes.clock = clock
    return logs


def _answer(logs, clock, rid, version, scores, role="live"):
    recs = [{"distance": 100 + i, "dest": "ORD"} for i in range(len(scores))]
    chunk = prediction_chunk(clock(), rid, version, role, "production", "snap-1", recs, scores,
                             [int(s >= 0.5) for s in scores], 3.5 if role == "live" else None)
    return logs.predictions.add(chunk, len(scores))


def test_parts_are_written_when_due_bounded_in_memory_and_rotated(tmp_path):
    clock = Clock()
    logs = _logs(tmp_path, clock, flush_records=4, flush_s=5, max_buffer=6, max_files=10)
    assert _answer(logs, clock, "r1", 1, [0.1, 0.2]) and not logs.predictions.due()
    clock.t += 6
    assert logs.predictions.due()                                  # the oldest record is flush_s old
    assert _answer(logs, clock, "r2", 1, [0.3] * 4) and not _answer(logs, clock, "r3", 1, [0.4])
    assert logs.predictions.stats()["dropped"] == 1                # beyond max_buffer: dropped, counted
    assert logs.predictions.flush() == 6
    preds, _ = logs.read(0, 0)
    assert preds.num_rows == 6 and preds.column("request_id").to_pylist() == ["r1", "r1"] + ["r2"] * 4
    assert preds.column("index").to_pylist()[:2] == [0, 1] and preds.column("snapshot")[0].as_py() == "snap-1"
    assert preds.column("inputs_hash")[0].as_py() == inputs_hash({"dest": "ORD", "distance": 100})
    for i in range(25):                                            # rotation: at most max_files parts kept
        clock.t += 1
        _answer(logs, clock, f"x{i}", 1, [0.5])
        logs.predictions.flush()
        logs.predictions.retain()
    names = Storage(str(tmp_path)).list_dir(logs.prefixes[0])
    assert len(names) == 10 and min(map(part_time, names)) == clock.t - 9  # the newest ten


def test_a_failed_write_keeps_the_buffer_for_the_next_try(tmp_path):
    clock = Clock()
    logs = _logs(tmp_path, clock)
    _answer(logs, clock, "r1", 1, [0.1, 0.9])
    real = logs.storage.write_bytes
    logs.storage.write_bytes = lambda *a: (_ for _ in ()).throw(OSError("storage down"))
    with pytest.raises(OSError):
        logs.predictions.flush()
    assert logs.predictions.buffered == 2
    logs.storage.write_bytes = real
    assert logs.predictions.flush() == 2 and logs.read(0, 0)[0].num_rows == 2


def test_outcomes_are_checked_per_record_naming_the_field():
    cols, errors = check_outcomes([{"request_id": "r1", "label": 1}, {"request_id": "r1", "index": 1, "label": True},
                                   {"request_id": "bad id!", "label": 0}, {"request_id": "r2", "label": 2},
                                   {"request_id": "r2", "index": -1, "label": 0}, {"request_id": "r2", "labl": 0},
                                   "x"], "binary", None, 5.0)
    assert cols == {"ts": [5.0, 5.0], "request_id": ["r1", "r1"], "index": [0, 1], "outcome": [1.0, 1.0]}
    assert [e["field"] for e in errors] == ["outcomes[2].request_id", "outcomes[3].label", "outcomes[4].index",
                                            "outcomes[5].labl", "outcomes[6]"]
    assert "0, 1, true or false" in errors[1]["message"]
    _, errors = check_outcomes([{"request_id": "r", "label": float("nan")}, {"request_id": "r", "label": "7"}],
                               "regression", None, 0)
    assert len(errors) == 2 and "finite number" in errors[0]["message"]
    cols, errors = check_outcomes([{"request_id": "r", "label": "b"}, {"request_id": "r", "label": "z"}],
                                  "multiclass", ["a", "b"], 0)
    assert cols["outcome"] == [1.0] and "one of the classes ['a', 'b']" in errors[0]["message"]


def test_a_planted_difference_between_two_versions_shows_in_their_live_auc():
    rng = np.random.default_rng(0)
    n = 4000
    y = rng.random(n) < 0.3
    good = np.clip(0.3 + 0.35 * (y - 0.3) + rng.normal(0, 0.15, n), 0.01, 0.99)   # informative
    bad = np.clip(0.3 + rng.normal(0, 0.15, n), 0.01, 0.99)                          # noise
    arm = rng.random(n) < 0.5
    chunks = [prediction_chunk(100.0 + i, f"r{i}", 2 if arm[i] else 1, "live", "c" if arm[i] else "p", None,
                               [{"i": i}], [bad[i] if arm[i] else good[i]], [int((bad if arm[i] else good)[i] >= .5)],
                               5.0 + i % 7) for i in range(n)]
    shadow = [prediction_chunk(100.0 + i, f"r{i}", 3, "shadow", "s", None, [{"i": i}], [good[i]], [int(good[i] >= .5)],
                               None) for i in range(0, n, 2)]
    preds = pa.Table.from_pydict(prediction_columns(chunks + shadow))
    outcomes = pa.Table.from_pydict({"ts": [200.0] * n, "request_id": [f"r{i}" for i in range(n)], "index": [0] * n,
                                     "outcome": y.astype(float)})
    report = live_report(preds, outcomes, "binary", None, 0.0, 1e6)
    by = {(v["version"], v["role"]): v for v in report["versions"]}
    v1, v2 = by[(1, "live")], by[(2, "live")]
    assert v1["requests"] + v2["requests"] == n and v1["errors"] == 0
    assert v1["auc"] > 0.8 and 0.4 < v2["auc"] < 0.6
    assert v1["auc_ci95"][0] > v2["auc_ci95"][1]                    # the intervals separate them
    assert v1["log_loss"] < v2["log_loss"] and v1["latency_ms"]["p50"] == pytest.approx(8.0, abs=1)
    agree = report["shadow_agreement"][0]
    assert agree["version"] == 3 and agree["against_versions"] == [1, 2] and agree["records"] == n // 2
    assert live_report(preds, None, "binary", None, 1e9, 2e9)["versions"] == []   # outside the window


def test_an_outcome_file_goes_through_the_same_checks_and_bad_rows_are_quarantined(tmp_path):
    from rayline.errors import InputError
    from rayline.serve.live_logs import load_outcomes
    from rayline.serve.partlog import read_parts

    clock = Clock()
    logs = _logs(tmp_path / "root", clock)
    f = tmp_path / "outcomes.csv"
    f.write_text("request_id,index,label\nr1,0,1\nr1,1,0\n,0,1\nr2,0,5\n")
    summary = load_outcomes(logs, str(f), "binary", None, clock())
    assert (summary["rows"], summary["accepted"], summary["quarantined"]) == (4, 2, 2)
    assert read_parts(logs.storage, logs.prefixes[1]).column("request_id").to_pylist() == ["r1", "r1"]
    reasons = read_parts(logs.storage, logs.prefixes[2]).column("reason").to_pylist()
    assert reasons[0].startswith(f"{f}: row 2: outcomes[2].request_id") and "row 3" in reasons[1]
    # ids that look like numbers stay the text the answers carried; a broken line is quarantined with its line
    f.write_text("request_id,index,label\n00042,0,1\n7,0,0\n8,0\n")
    summary = load_outcomes(logs, str(f), "binary", None, clock())
    assert (summary["rows"], summary["accepted"], summary["quarantined"]) == (3, 2, 1)
    assert sorted(read_parts(logs.storage, logs.prefixes[1]).column("request_id").to_pylist()) == ["00042", "7", "r1", "r1"]
    assert summary["first_errors"] == ["row 2: line 4: 2 field(s) where the header has 3: '8,0'"]
    j = tmp_path / "outcomes.jsonl"
    j.write_text('{"request_id": 42, "label": 1}\n')
    assert load_outcomes(logs, str(j), "binary", None, clock())["accepted"] == 1
    (tmp_path / "no_label.csv").write_text("request_id\nr1\n")
    with pytest.raises(InputError, match=r"no_label.csv: missing column\(s\) \['label'\]"):
        load_outcomes(logs, str(tmp_path / "no_label.csv"), "binary", None, clock())
    with pytest.raises(InputError, match="no such file"):
        load_outcomes(logs, str(tmp_path / "absent.parquet"), "binary", None, clock())


def test_the_grafana_dashboard_queries_only_series_the_replicas_export():
    import json
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    declared = set(re.findall(r'metrics\.\w+\("(rayline_\w+)"', (root / "src/rayline/serve/monitor.py").read_text()))
    dash = json.loads((root / "cluster/grafana-rayline-versions.json").read_text())
    used = {m for p in dash["panels"] for t in p["targets"] for m in re.findall(r"ray_(rayline_\w+?)(?:_total|_bucket|_sum|_count)?\{", t["expr"])}
    assert used and used <= declared, used - declared
    assert {"rayline_requests", "rayline_request_errors", "rayline_request_latency_ms"} <= used
