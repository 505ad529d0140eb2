"""A declared date format, end to end: the ingest reads `2024/01/05 13:00` as the config says, and
the endpoint (real HTTP) and `rayline predict` read the same text the same way, because the
format travels in the model's FeatureSpec. A CSV input split by ';' is refused with the setting
to use, then read with it."""

import json

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from rayline.batch import run_batch_predict
from rayline.config import config_from_dict
from rayline.errors import InputError
from rayline.features.contract import Contract
from rayline.pipeline import train_and_register
from rayline.registry import Registry
from rayline.serve.deploy import deploy
from rayline.storage import Storage
from tests.conftest import SERVE_PORT, small_config, small_tables, write_tables


def test_a_declared_format_is_read_the_same_at_ingest_online_and_in_batch(ray_local, tmp_path):
    from ray import serve

    tables = small_tables()
    trips = tables["trips"]
    local = pc.strftime(trips.column("ts"), format="%Y/%m/%d %H:%M")
    tables["trips"] = trips.set_column(trips.schema.get_field_index("ts"), "ts", local)
    data = tmp_path / "data"
    write_tables(tables, data)
    raw = small_config(data, tmp_path / "root")
    raw["data"]["sources"]["trips"]["columns"]["ts"] = {"type": "timestamp", "format": "%Y/%m/%d %H:%M"}
    raw["train"]["model"] = {"family": "xgboost", "xgboost": {"num_boost_round": 20, "checkpoint_every": 10}}
    raw["serve"] = {"port": SERVE_PORT, "app_name": "formats", "cpus_per_replica": 0.25,
                    "autoscaling": {"min_replicas": 1, "max_replicas": 1}}
    raw["batch"] = {"cpus_per_actor": 0.25, "gpus_per_actor": 0}
    cfg = config_from_dict(raw)
    storage = Storage(cfg.storage.root)
    out = train_and_register(cfg, storage)
    assert out.version.lineage and json.loads(Registry(storage, cfg.name).read_file(out.version.version, "feature_spec.json")
                                              )["constraints"]["ts"]["format"] == ["%Y/%m/%d %H:%M"]
    _, model = Registry(storage, cfg.name).load(str(out.version.version))
    spec = model.spec

    # ingest = the contract + transform online: the time inputs of the model-ready rows
    ready = pq.read_table(out.version.lineage["ingest_uri"] + "/ready/split=test").sort_by("trip_id")
    ids = ready.column("trip_id").to_pylist()[:20]
    records = [r for r in tables["trips"].to_pylist() if r["trip_id"] in set(ids)]
    records.sort(key=lambda r: r["trip_id"])
    typed, failures = Contract(spec).check_records([{k: v for k, v in r.items() if k in spec.input_columns}
                                                    for r in records])
    assert not failures.bad.any()
    cols = [i for i, n in enumerate(spec.numeric_inputs) if n.startswith("ts__")]
    online_inputs = spec.transform(typed).num[:, cols]
    ingest_inputs = np.stack(ready.column("x_num").to_numpy(zero_copy_only=False)[:20])[:, cols]
    np.testing.assert_array_equal(online_inputs, ingest_inputs)
    assert np.abs(online_inputs).sum() > 0  # the times were read, not imputed as missing

    # the endpoint over real HTTP and `rayline predict` on the CSV give the same predictions
    d = deploy(cfg, str(out.version.version))
    try:
        body = {"instances": [{k: v for k, v in r.items() if k in spec.input_columns} for r in records]}
        r = httpx.post(f"{d.url}/predict", json=body, timeout=60)
        assert r.status_code == 200, r.text
        online = [p["probability"] for p in r.json()["predictions"]]
        bad = httpx.post(f"{d.url}/predict", json={**body["instances"][0], "ts": "2024-13-45 99:99"}, timeout=60)
        assert bad.status_code == 422 and "%Y/%m/%d %H:%M" in bad.json()["message"]
    finally:
        serve.delete("formats")
    pacsv.write_csv(pa.Table.from_pylist(records), tmp_path / "input.csv")
    res = run_batch_predict(cfg, storage, str(tmp_path / "input.csv"), str(tmp_path / "out"), model=str(out.version.version))
    assert res.quarantined == 0
    batch = pq.read_table(tmp_path / "out" / "predictions").sort_by("trip_id")
    np.testing.assert_allclose(batch.column("prediction").to_pylist(), online, atol=1e-6)

    # the same input from a European spreadsheet (';'): refused with the setting to use, then read
    semi = tmp_path / "input_semicolon.csv"
    pacsv.write_csv(pa.Table.from_pylist(records), semi, write_options=pacsv.WriteOptions(delimiter=";"))
    with pytest.raises(InputError, match=r"It looks separated by ';': set --delimiter ';'"):
        run_batch_predict(cfg, storage, str(semi), str(tmp_path / "out_semi"), model=str(out.version.version))
    assert not (tmp_path / "out_semi").exists()
    with pytest.raises(InputError, match=r"input .*input_semicolon.csv: delimiter must be one character"):
        run_batch_predict(cfg, storage, str(semi), str(tmp_path / "out_semi"), model=str(out.version.version), delimiter=";;")
    with pytest.raises(InputError, match=r"input .*input_semicolon.csv: encoding 'klingon' is not a text encoding"):
        run_batch_predict(cfg, storage, str(semi), str(tmp_path / "out_semi"), model=str(out.version.version),
                          delimiter=";", encoding="klingon")
    res = run_batch_predict(cfg, storage, str(semi), str(tmp_path / "out_semi"), model=str(out.version.version),
                            delimiter=";", encoding="cp1252")  # ASCII text reads the same in cp1252
    assert res.quarantined == 0
    again = pq.read_table(tmp_path / "out_semi" / "predictions").sort_by("trip_id")
    np.testing.assert_allclose(again.column("prediction").to_pylist(), online, atol=1e-6)
    # and with a decimal comma (412,5), as a German spreadsheet writes it
    semi.write_text(semi.read_text().replace(".", ","))
    res = run_batch_predict(cfg, storage, str(semi), str(tmp_path / "out_comma"), model=str(out.version.version),
                            delimiter=";", decimal=",")
    assert res.quarantined == 0
    comma = pq.read_table(tmp_path / "out_comma" / "predictions").sort_by("trip_id")
    np.testing.assert_allclose(comma.column("prediction").to_pylist(), online, atol=1e-6)
