"""JSON sources as users have them: JSON lines or one array of records, read as a stream, with
unreadable records quarantined with their line or index instead of failing the file."""

import gzip
import io
import json

import pyarrow.parquet as pq
import pytest

import rayline.data.json_records as jr
from rayline.config import config_from_dict
from rayline.data import run_ingest
from rayline.data.json_records import BAD_RECORD, first_keys, iter_records, read_tables
from rayline.storage import Storage
from tests.conftest import small_config, small_tables


def _read(data: bytes):
    return [(w, r if isinstance(r, dict) else "BAD " + r.reason) for w, r in iter_records(io.BytesIO(data))]


def test_lines_and_array_give_the_same_records():
    rows = [{"a": 1, "b": "x"}, {"a": 2.5, "b": None}, {"b": "z"}]
    lines = "".join(json.dumps(r) + "\n" for r in rows).encode()
    array = json.dumps(rows, indent=2).encode()
    assert [r for _, r in _read(lines)] == [r for _, r in _read(array)] == rows
    assert next(read_tables(io.BytesIO(lines))).equals(next(read_tables(io.BytesIO(array))))
    # a UTF-8 byte order mark first (PowerShell, Notepad): an array was read as one bad line
    bom = b"\xef\xbb\xbf"
    assert [r for _, r in _read(bom + array)] == [r for _, r in _read(bom + lines)] == rows
    assert first_keys(io.BytesIO(bom + array)) == ["a", "b"]


@pytest.mark.parametrize("data, expected", [
    (b'{"a":1}\n\nnot json\n[1]\n{"a":3}', [("line 1", {"a": 1}), ("line 3", "BAD not valid JSON"),
                                            ("line 4", "BAD an array, expected a JSON object"), ("line 5", {"a": 3})]),
    (b'[{"a":1}, 5, {"a": tru}, {"a":4}]', [("index 0", {"a": 1}), ("index 1", "BAD a number, expected a JSON object"),
                                             ("index 2", "BAD not valid JSON"), ("index 3", {"a": 4})]),
    (b'[{"a":1},{"a":2}', [("index 0", {"a": 1}), ("index 1", {"a": 2}), ("index 2", "BAD the array is not closed")]),
    (b'[{"a":1},{"a": tru}]', [("index 0", {"a": 1}), ("index 1", "BAD not valid JSON")]),
    (b'{"a":1}\n{"a":"\xff"}\n', [("line 1", {"a": 1}), ("line 2", "BAD not valid JSON")]),
    (b"[]", []), (b"  \n", []),
])
def test_malformed_records_are_reported_where_they_are(data, expected):
    got = _read(data)
    assert [w for w, _ in got] == [w for w, _ in expected]
    for (_, r), (_, e) in zip(got, expected):
        assert r == e if isinstance(e, dict) else r.startswith(e)


def test_records_straddling_chunks_are_read_whole(monkeypatch):
    monkeypatch.setattr(jr, "CHUNK_BYTES", 7)
    rows = [{"i": i, "s": "é" * i} for i in range(50)]   # multi-byte characters cut across chunks too
    assert [r for _, r in _read(json.dumps(rows).encode())] == rows
    assert [r for _, r in _read("".join(json.dumps(r) + "\n" for r in rows).encode())] == rows


def test_values_arrive_as_text_the_column_rules_type():
    t = next(read_tables(io.BytesIO(b'[{"a":1,"f":1545.0,"t":true,"n":null,"o":{"x":1}}]')))
    assert t.to_pylist() == [{"a": "1", "f": "1545", "t": "true", "n": None, "o": '{"x":1}', BAD_RECORD: None}]


def _tables():
    tables = small_tables(300)
    return tables, {name: t.to_pylist() for name, t in tables.items()}


def _write(data_dir, rows: dict, array: bool, gz: bool = False):
    data_dir.mkdir(parents=True, exist_ok=True)
    for name, records in rows.items():
        text = json.dumps(records, default=str) if array else "".join(json.dumps(r, default=str) + "\n" for r in records)
        path = data_dir / f"{name}.json{'.gz' if gz else ''}"
        path.write_bytes(gzip.compress(text.encode()) if gz else text.encode())


def _ingest(data_dir, root, ext="json"):
    raw = small_config(data_dir, root, fmt="json")
    for name, src in raw["data"]["sources"].items():
        src["path"] = str(data_dir / f"{name}.{ext}")
    cfg = config_from_dict(raw)
    return run_ingest(cfg, Storage(cfg.storage.root))


def test_an_array_file_and_a_lines_file_give_the_same_dataset(ray_local, tmp_path):
    _, rows = _tables()
    _write(tmp_path / "lines", rows, array=False)
    _write(tmp_path / "array", rows, array=True, gz=True)
    a = _ingest(tmp_path / "lines", tmp_path / "r1")
    b = _ingest(tmp_path / "array", tmp_path / "r2", ext="json.gz")
    assert a.manifest["rows"] == b.manifest["rows"] and a.manifest["rows"]["clean"] == 300
    assert a.spec.to_json() == b.spec.to_json()
    for split in ("train", "valid", "test"):
        ta = pq.read_table(a.split_uri(split)).sort_by("trip_id")
        tb = pq.read_table(b.split_uri(split)).sort_by("trip_id")
        assert ta.select(["x_num", "x_cat", "y"]).equals(tb.select(["x_num", "x_cat", "y"]))


def test_unreadable_records_are_quarantined_with_their_index_and_the_rest_is_ingested(ray_local, tmp_path):
    _, rows = _tables()
    _write(tmp_path / "data", rows, array=True)
    path = tmp_path / "data" / "trips.json"
    text = path.read_text()
    # element 1 not an object, element 2 broken (a bare word)
    first_end = text.index("}, {") + 1
    second_end = text.index("}, {", first_end + 1) + 1
    path.write_text(text[:first_end] + ', 17, {"trip_id": nope}' + text[second_end:])
    result = _ingest(tmp_path / "data", tmp_path / "root")
    counts = result.manifest["rows"]
    assert counts["read"] == 301 and counts["quarantined"] == 2 and counts["clean"] == 299
    q = [r for r in pq.read_table(result.quarantine_uri).to_pylist() if r["rule"] == "json"]
    assert sorted(r["value"].split(":")[0] for r in q) == ["index 1", "index 2"]
    assert all(r["source_file"].endswith("trips.json") for r in q)
    assert result.manifest["quarantine_by_rule"]["trips.(record):json"] == 2
