"""Data as users have it, through the CLI: dates in a local format, a split left with nothing to
learn from. The console says which values failed which rule and what to declare, and the run
stops after the ingest instead of training on nothing."""

import datetime as dt
from zoneinfo import ZoneInfo

import pyarrow as pa
import pyarrow.compute as pc
from typer.testing import CliRunner

from rayline.cli import app
from rayline.config import config_from_dict
from rayline.data import run_ingest
from rayline.features.contract import Contract
from rayline.storage import Storage
from tests.conftest import save_yaml, small_config, small_tables, write_tables

runner = CliRunner()


def _slash_dates(data):
    """trips.csv with `ts` spelled 2024/01/05 (a public daily-weather set's spelling)."""
    tables = small_tables()
    trips = tables["trips"]
    days = pc.strftime(trips.column("ts"), format="%Y/%m/%d")
    tables["trips"] = trips.set_column(trips.schema.get_field_index("ts"), "ts", days)
    write_tables(tables, data)
    return tables


def test_local_date_format_is_named_with_its_values_and_the_run_stops_before_training(ray_local, tmp_path):
    data, root = tmp_path / "data", tmp_path / "root"
    _slash_dates(data)
    raw = small_config(data, root)
    raw["data"]["split"] = {"method": "time", "column": "ts", "test_from": "2024-03-01"}
    cfg = save_yaml(raw, tmp_path / "c.yaml")
    r = runner.invoke(app, ["train", "--config", str(cfg)])
    assert r.exit_code == 1, r.output
    out = r.output
    assert "600 of 600 rows of 'trips' failed ts:type" in out                  # the warning, with the values
    assert "e.g. '2024/0" in out and "declare `format: \"%Y/%m/%d\"` in data.sources.trips.columns.ts" in out
    assert "split 'train' has 0 rows" in out and "stopping before training" in out
    assert "600 rows read, 0 clean (train 0, valid 0, test 0), 600 quarantined" in out
    assert "WorkerGroupError" not in out and "Traceback" not in out


def test_the_declared_format_is_honoured_at_ingest_and_by_the_contract_online_and_in_batch(ray_local, tmp_path):
    data, root = tmp_path / "data", tmp_path / "root"
    tables = _slash_dates(data)
    raw = small_config(data, root)
    raw["data"]["sources"]["trips"]["columns"]["ts"] = {"type": "timestamp", "format": ["%Y/%m/%d"],
                                                        "timezone": "America/New_York"}
    cfg = config_from_dict(raw)
    result = run_ingest(cfg, Storage(cfg.storage.root))
    assert result.manifest["rows"]["quarantined"] == 0 and result.manifest["rows"]["clean"] == 600
    constraint = result.spec.constraints["ts"]
    assert constraint.format == ["%Y/%m/%d"] and constraint.timezone == "America/New_York"
    contract = Contract(result.spec)
    first = tables["trips"].slice(0, 3).to_pylist()
    online, f_online = contract.check_records(first)                      # what /predict runs
    batch, f_batch = contract.check_table(pa.Table.from_pylist(first))    # what rayline predict runs
    assert not f_online.bad.any() and not f_batch.bad.any()
    assert online.column("ts").to_pylist() == batch.column("ts").to_pylist()
    midnight = dt.datetime.strptime(first[0]["ts"], "%Y/%m/%d").replace(tzinfo=ZoneInfo("America/New_York"))
    assert online.column("ts")[0].as_py() == midnight  # midnight in New York, not in UTC


def test_a_training_split_with_one_class_stops_after_the_ingest(ray_local, tmp_path):
    data, root = tmp_path / "data", tmp_path / "root"
    write_tables(small_tables(), data)
    raw = small_config(data, root)
    raw["data"]["label"] = {"column": "delay", "positive_if": {">": 10_000}}  # no trip is that late
    cfg = save_yaml(raw, tmp_path / "c.yaml")
    r = runner.invoke(app, ["train", "--config", str(cfg)])
    assert r.exit_code == 1, r.output
    assert "split 'train' has 1 label class(es) (negative: " in r.output and "data.split.min_classes: 2" in r.output
    assert "stopping before training" in r.output


def test_min_rows_is_configurable(ray_local, tmp_path):
    data, root = tmp_path / "data", tmp_path / "root"
    write_tables(small_tables(), data)
    raw = small_config(data, root)
    raw["data"]["split"]["min_rows"] = 10_000
    cfg = save_yaml(raw, tmp_path / "c.yaml")
    r = runner.invoke(app, ["ingest", "--config", str(cfg)])
    assert r.exit_code == 1 and "split 'train' has " in r.output and "(data.split.min_rows: 10000)" in r.output
    assert not any((root / "datasets").rglob("manifest.json"))  # nothing half-written was published



def test_csv_categories_keep_their_leading_zeros_as_a_client_sends_them(ray_local, tmp_path):
    """Station codes 007, 012, 100 in CSV files: type inference read them as the numbers 7, 12 and
    100, so training learned categories '7' and '12' while a client (JSON) and the endpoint send
    '007'. A column of kind string is read as text: the vocabulary, the join and the online
    record agree."""
    data = tmp_path / "data"
    tables = small_tables()
    codes = {"AAA": "007", "BBB": "012", "CCC": "100"}
    trips, stations = tables["trips"], tables["stations"]
    tables["trips"] = trips.set_column(trips.schema.get_field_index("station"), "station",
                                       pa.array([codes[s] for s in trips.column("station").to_pylist()]))
    tables["stations"] = stations.set_column(0, "code", pa.array([codes[s] for s in stations.column("code").to_pylist()]))
    write_tables(tables, data)
    for name in ("trips", "stations"):  # unquoted, as spreadsheets and pandas write them
        (data / f"{name}.csv").write_text((data / f"{name}.csv").read_text().replace('"', ""))
    raw = small_config(data, tmp_path / "root")
    raw["data"]["sources"]["trips"]["columns"]["station"]["allowed"] = list(codes.values())
    cfg = config_from_dict(raw)
    result = run_ingest(cfg, Storage(cfg.storage.root))
    assert result.manifest["rows"]["clean"] == 600 and result.manifest["rows"]["quarantined"] == 0
    vocab = next(c for c in result.spec.categorical if c.name == "station").vocabulary
    assert set(vocab) == set(codes.values())
    assert next(n for n in result.spec.numeric if n.name == "elevation").null_fraction == 0  # every join found its station
    typed, failures = Contract(result.spec).check_records([{"station": "007", "distance": 10.0}])
    assert not failures.bad.any() and typed.column("station").to_pylist() == ["007"]


def test_epoch_seconds_are_named_by_the_advice_then_read_as_declared_online_and_in_batch(ray_local, tmp_path):
    """A time column spelled as seconds since 1970 (event logs, JSON APIs): undeclared, every row
    fails ts:type and the warning names the unit to declare; declared `format: epoch_s`, the ingest,
    a JSON number online and an integer batch column read the same instants."""
    data, root = tmp_path / "data", tmp_path / "root"
    tables = small_tables()
    trips = tables["trips"]
    instants = trips.column("ts").to_pylist()
    tables["trips"] = trips.set_column(trips.schema.get_field_index("ts"), "ts", trips.column("ts").cast(pa.int64()))
    write_tables(tables, data)
    raw = small_config(data, root)
    r = runner.invoke(app, ["train", "--config", str(save_yaml(raw, tmp_path / "c.yaml"))])
    assert r.exit_code == 1 and "these read as format 'epoch_s'; declare `format: \"epoch_s\"` in data.sources.trips.columns.ts" in r.output
    raw["data"]["sources"]["trips"]["columns"]["ts"] = {"type": "timestamp", "format": "epoch_s"}
    cfg = config_from_dict(raw)
    result = run_ingest(cfg, Storage(cfg.storage.root))
    assert result.manifest["rows"]["quarantined"] == 0 and result.manifest["rows"]["clean"] == 600
    contract = Contract(result.spec)
    first = tables["trips"].slice(0, 3)
    online, f_online = contract.check_records([{"ts": v} for v in first.column("ts").to_pylist()])
    batch, f_batch = contract.check_table(first.select(["ts"]))
    assert not f_online.bad.any() and not f_batch.bad.any()
    assert online.column("ts").to_pylist() == batch.column("ts").to_pylist() == instants[:3]
