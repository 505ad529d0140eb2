"""A replica's two logs under the storage root (layout.live_log): the answers it gave and the
outcomes clients posted, each a bounded, rotated `PartLog`."""

from __future__ import annotations

from dataclasses import dataclass

from rayline import layout
from rayline.config import PredictionLogConfig
from rayline.serve.live import OUTCOME_SCHEMA, PREDICTION_SCHEMA, QUARANTINE_SCHEMA, check_outcomes, prediction_columns
from rayline.serve.partlog import PartLog, read_parts
from rayline.storage import Storage


@dataclass
class LiveLogs:
    storage: Storage
    predictions: PartLog
    outcomes: PartLog
    prefixes: tuple[str, str, str]  # predictions, outcomes, quarantine (outcome rows refused)

    @classmethod
    def open(cls, args, writer: str) -> "LiveLogs":
        """`args`: a replica's ReplicaArgs (its storage root, model name, app and log settings)."""
        return cls.at(Storage(args.storage_root), args.name, args.serve.app_name, args.serve.prediction_log, writer)

    @classmethod
    def at(cls, storage: Storage, name: str, app: str, cfg: PredictionLogConfig, writer: str) -> "LiveLogs":
        p, o, q = (layout.live_log(name, app, kind) for kind in (layout.PREDICTIONS, layout.OUTCOMES, layout.QUARANTINE))
        return cls(storage, PartLog(storage, p, PREDICTION_SCHEMA, cfg, writer, prepare=prediction_columns),
                   PartLog(storage, o, OUTCOME_SCHEMA, cfg, writer), (p, o, q))

    def flush_due(self) -> None:
        for log in (self.predictions, self.outcomes):
            if log.due():
                log.flush()

    def flush_all(self) -> None:
        self.predictions.flush()
        self.outcomes.flush()

    def read(self, since: float, margin_s: float):
        """(predictions, outcomes) written since `since` (outcomes: all kept, they arrive late);
        parts are named by write time, so `margin_s` (the flush interval) reaches back for rows
        buffered before the window opened."""
        return (read_parts(self.storage, self.prefixes[0], since - margin_s, PREDICTION_SCHEMA),
                read_parts(self.storage, self.prefixes[1], since - margin_s, OUTCOME_SCHEMA))

    def report(self, task: str, classes: list[str] | None, window_s: float, now: float | None = None) -> dict:
        """`live.live_report` over the last `window_s` seconds of what is written."""
        import time

        from rayline.serve.live import live_report

        now = time.time() if now is None else now
        preds, outcomes = self.read(now - window_s, self.predictions.cfg.flush_s + 60)
        return live_report(preds, outcomes, task, classes, now - window_s, now)

    def stats(self) -> dict:
        return {"predictions": self.predictions.stats(), "outcomes": self.outcomes.stats()}


def read_outcome_file(path: str) -> tuple[list[dict], dict[int, str]]:
    """An outcome file's rows (Parquet, CSV or JSON lines, by its suffix) as records, and the rows
    that could not be read (a CSV line with the wrong number of fields) by position, with why. The
    request id is read as text: inferred, `00042` would be the number 42 and match no answer."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.json as pjson
    import pyarrow.parquet as pq

    from rayline.data.csv_rows import BAD_ROW, CSVRead
    from rayline.errors import InputError

    lower = path.lower()
    try:
        if lower.endswith(".parquet"):
            table = pq.read_table(path)
        elif lower.endswith((".csv", ".tsv")):
            with pa.OSFile(path) as f:
                table = pa.concat_tables(list(CSVRead(text=("request_id",)).tables(f, lower)), promote_options="permissive")
        elif lower.endswith((".json", ".jsonl", ".ndjson")):
            table = pjson.read_json(path)
        else:
            raise InputError(f"{path}: expected a .parquet, .csv or .json(l) file of outcomes")
    except InputError:
        raise
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except Exception as e:  # noqa: BLE001 - pyarrow's parse errors name the line
        raise InputError(f"{path}: not a readable outcome file: {str(e)[:300]}") from None
    missing = [c for c in ("request_id", "label") if c not in table.column_names]
    if missing:
        raise InputError(f"{path}: missing column(s) {missing}; an outcome file has request_id, label and "
                         f"optionally index (got {table.column_names[:10]})")
    rid = table.column("request_id")
    if pa.types.is_integer(rid.type):  # a JSON or Parquet number: the id it spells
        table = table.set_column(table.column_names.index("request_id"), "request_id", pc.cast(rid, pa.string()))
    unreadable = {}
    if BAD_ROW in table.column_names:
        unreadable = {i: why for i, why in enumerate(table.column(BAD_ROW).to_pylist()) if why is not None}
    return table.select([c for c in ("request_id", "index", "label") if c in table.column_names]).to_pylist(), unreadable


def load_outcomes(logs: LiveLogs, path: str, task: str, classes: list[str] | None, now: float) -> dict:
    """A file of outcomes through the checks /outcomes applies: valid rows into the outcome log,
    the others into its quarantine with the row number and the reason (nothing dropped silently)."""
    import io
    import json
    import uuid

    import pyarrow as pa
    import pyarrow.parquet as pq

    records, unreadable = read_outcome_file(path)
    rows = [{k: v for k, v in r.items() if not (k == "index" and v is None)} for r in records]
    readable = [i for i in range(len(rows)) if i not in unreadable]
    cols, errors = check_outcomes([rows[i] for i in readable], task, classes, now)
    errors = sorted([{**e, "row": readable[e["row"]]} for e in errors] +
                    [{"row": i, "field": "(line)", "message": why} for i, why in unreadable.items()], key=lambda e: e["row"])
    name = f"{int(now * 1000):013d}-file-{uuid.uuid4().hex[:8]}.parquet"
    quarantine = {"ts": [now] * len(errors), "row": [e["row"] for e in errors],
                  "record": [json.dumps(rows[e["row"]], default=str)[:2000] for e in errors],
                  "reason": [f"{path}: row {e['row']}: {e['message']}" for e in errors]}
    for prefix, schema, data in ((logs.prefixes[1], OUTCOME_SCHEMA, cols),
                                 (logs.prefixes[2], QUARANTINE_SCHEMA, quarantine)):
        if data["ts"]:
            sink = io.BytesIO()
            pq.write_table(pa.Table.from_pydict(data, schema=schema), sink)
            logs.storage.write_bytes(sink.getvalue(), prefix, name)
    return {"file": path, "rows": len(rows), "accepted": len(cols["ts"]), "quarantined": len(errors),
            "first_errors": [f"row {e['row']}: {e['message']}" for e in errors[:5]]}
