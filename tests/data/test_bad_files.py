"""Whole-file problems stop the run with one message that names the file and the problem."""

import pyarrow.parquet as pq
import pytest

from rayline.config import config_from_dict
from rayline.data import run_ingest
from rayline.errors import InputError
from rayline.storage import Storage
from tests.conftest import small_config, small_tables, write_tables


def _run(raw):
    cfg = config_from_dict(raw)
    return run_ingest(cfg, Storage(cfg.storage.root))


def test_missing_file(ray_local, small_data):
    data, root = small_data
    (data / "trips.csv").unlink()
    with pytest.raises(InputError, match=r"source 'trips': .*trips.csv does not exist"):
        _run(small_config(data, root))


def test_csv_header_lacks_required_column(ray_local, small_data):
    data, root = small_data
    lines = (data / "trips.csv").read_text().splitlines()
    header = lines[0].replace('"distance"', '"dist"')
    (data / "trips.csv").write_text("\n".join([header] + lines[1:]) + "\n")
    with pytest.raises(InputError) as e:
        _run(small_config(data, root))
    assert "trips.csv lacks required column(s) ['distance']" in str(e.value)


def test_empty_file_and_header_only_input(ray_local, small_data):
    data, root = small_data
    (data / "trips.csv").write_text("")
    with pytest.raises(InputError, match=r"trips.csv is empty \(0 bytes\)"):
        _run(small_config(data, root))
    header = ",".join(f'"{c}"' for c in small_tables(5)["trips"].column_names)
    (data / "trips.csv").write_text(header + "\n")
    with pytest.raises(InputError, match="has no rows"):
        _run(small_config(data, root))


def test_truncated_parquet(ray_local, tmp_path):
    data = tmp_path / "data"
    write_tables(small_tables(200), data, "parquet")
    blob = (data / "trips.parquet").read_bytes()
    (data / "trips.parquet").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(InputError, match=r"trips.parquet is not a readable Parquet file"):
        _run(small_config(data, tmp_path / "root", fmt="parquet"))


def test_empty_dimension_and_directory_without_files(ray_local, tmp_path, small_data):
    data, root = small_data
    (data / "stations.csv").write_text('"code","elevation"\n')
    with pytest.raises(InputError, match="source 'stations': the table has no rows"):
        _run(small_config(data, root))
    empty = tmp_path / "empty"
    empty.mkdir()
    raw = small_config(data, root)
    raw["data"]["sources"]["trips"]["path"] = str(empty)
    with pytest.raises(InputError, match="holds no csv files"):
        _run(raw)


def test_broken_csv_lines_are_quarantined_with_their_line_and_the_rest_is_read(ray_local, small_data):
    """A line with too few or too many fields, or a quote never closed, fails that line only
    (rule 'csv', its line number and text), in the fact table and in a dimension alike; Arrow's
    reader would stop the whole file there."""
    data, root = small_data
    lines = (data / "trips.csv").read_text().splitlines()
    lines[10] += ',"extra"'                   # one field too many (line 11)
    lines[20] = ",".join(lines[20].split(",")[:3])  # too few (line 21)
    (data / "trips.csv").write_text("\n".join(lines) + '\n1,"AAA,2\n')  # an unclosed quote runs to the end
    with open(data / "vehicles.csv", "a") as f:
        f.write("V999\n")
    result = _run(small_config(data, root))
    rows = result.manifest["rows"]
    assert rows["read"] == 601 and rows["quarantined"] == 3 and rows["clean"] == 598
    q = pq.read_table(root / "datasets" / "trips" / result.key / "quarantine").to_pylist()
    broken = sorted((r["table"], r["rule"], r["value"].split(":")[0]) for r in q if r["rule"] == "csv")
    assert broken == [("trips", "csv", "line 11"), ("trips", "csv", "line 21"), ("trips", "csv", "line 602"),
                      ("vehicles", "csv", "line 42")]
    line11 = next(r for r in q if r["value"].startswith("line 11"))
    assert "8 field(s) where the header has 7" in line11["value"] and lines[10][:20] in line11["value"]
    assert "__rl_" not in line11["row"]  # rayline's own columns stay out of the quarantined row


def test_a_bad_value_deep_in_a_csv_is_quarantined_for_a_declared_column_and_named_for_another(ray_local, tmp_path):
    """Arrow types a column from a file's first ~1 MB. A declared column is read as text and typed
    by its rule, so a bad value far down is that row's quarantine; in an undeclared column it
    stops the read with the line, the column and the setting that fixes it."""
    data = tmp_path / "data"
    tables = small_tables(60000)
    write_tables(tables, data)
    lines = (data / "trips.csv").read_text().splitlines()
    assert len("\n".join(lines[:50000])) > 2 << 20  # well past Arrow's first block
    fields = lines[50000].split(",")
    fields[3] = "far"  # distance: declared float
    lines[50000] = ",".join(fields)
    (data / "trips.csv").write_text("\n".join(lines) + "\n")
    result = _run(small_config(data, tmp_path / "root"))
    assert result.manifest["rows"]["quarantined"] == 1
    q = pq.read_table(tmp_path / "root" / "datasets" / "trips" / result.key / "quarantine").to_pylist()
    assert [(r["rule"], r["column"], r["value"]) for r in q] == [("type", "distance", "far")]
    fields[3] = "20.5"
    fields[0] = "x50000"  # trip_id, made undeclared below
    raw = small_config(data, tmp_path / "root2")
    del raw["data"]["sources"]["trips"]["columns"]["trip_id"]
    raw["data"]["split"]["key"] = ["station"]
    raw["data"]["passthrough"] = ["trip_id"]
    lines[50000] = ",".join(fields)
    (data / "trips.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError) as e:
        _run(raw)
    msg = str(e.value)
    assert "trips.csv" in msg and "line 50001" in msg and "column 'trip_id'" in msg and "'x50000'" in msg
    assert "data.sources.trips.columns.trip_id" in msg


def test_parquet_schema_check_uses_footer(ray_local, tmp_path):
    data = tmp_path / "data"
    tables = small_tables(50)
    tables["trips"] = tables["trips"].drop_columns(["delay"])
    write_tables(tables, data, "parquet")
    assert "delay" not in pq.read_schema(data / "trips.parquet").names
    with pytest.raises(InputError, match=r"lacks required column\(s\) \['delay'\]"):
        _run(small_config(data, tmp_path / "root", fmt="parquet"))


@pytest.mark.parametrize("change", ["rewritten", "rows_added"])
def test_input_changed_between_the_two_passes(ray_local, small_data, change):
    """Both passes read the input; a file replaced in between must not yield a mixed dataset."""
    import os

    data, root = small_data
    trips = data / "trips.csv"
    cfg = config_from_dict(small_config(data, root))

    def progress(msg):
        if "pass 2/2" in msg:
            if change == "rows_added":
                lines = trips.read_text().splitlines()
                trips.write_text("\n".join(lines + lines[1:20]) + "\n")
            else:
                st = trips.stat()
                os.utime(trips, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))

    storage = Storage(cfg.storage.root)
    with pytest.raises((InputError, RuntimeError), match="change"):
        run_ingest(cfg, storage, progress=progress)
    assert not storage.exists(f"datasets/{cfg.name}", "LATEST.json")
    assert not [p for p in (root / "datasets" / cfg.name).glob("*") if not p.name.startswith(".tmp")]


def test_a_csv_split_by_another_separator_names_the_setting_then_reads_with_it(ray_local, tmp_path):
    """A European spreadsheet's CSV (';'): its header reads as one column. The error says which
    separator it looks like and the field to set; with it declared, every table reads as the
    comma version does."""
    import pyarrow.csv as pacsv

    data = tmp_path / "data"
    data.mkdir()
    for name, t in small_tables().items():
        pacsv.write_csv(t, data / f"{name}.csv", write_options=pacsv.WriteOptions(delimiter=";"))
    raw = small_config(data, tmp_path / "root")
    with pytest.raises(InputError, match=r"It looks separated by ';': set data.sources.trips.delimiter ';'"):
        _run(raw)
    for src in raw["data"]["sources"].values():
        src["delimiter"] = ";"
    result = _run(raw)
    assert result.manifest["rows"]["clean"] == 600 and result.manifest["rows"]["quarantined"] == 0

    # the same spreadsheet in a German locale also writes 412,5 for 412.5: told, then read the same
    for name in small_tables():
        path = data / f"{name}.csv"
        path.write_text(path.read_text().replace(".", ","))
    lines = []
    with pytest.raises(InputError):  # every row fails distance:type, so no split has rows
        run_ingest(config_from_dict(raw), Storage(raw["storage"]["root"]), progress=lines.append)
    assert any("numbers with a decimal comma; declare `decimal: \",\"` in data.sources.trips" in m for m in lines)
    for src in raw["data"]["sources"].values():
        src["decimal"] = ","
    again = _run(raw)
    assert again.manifest["rows"]["clean"] == 600 and again.spec.numeric == result.spec.numeric


def test_parquet_files_that_disagree_on_a_column_type_are_read_as_one_table(ray_local, tmp_path):
    """Two exports of one table, from different writers: `trip_id` and `distance` are numbers in
    one file and text in the other (with one value that is no number). Ray Data could not merge
    the blocks and the ingest failed; now the column is text in both, and its rule judges each value."""
    import pyarrow as pa

    data = tmp_path / "data"
    tables = small_tables(600)
    write_tables({k: v for k, v in tables.items() if k != "trips"}, data, "parquet")
    trips = tables["trips"]
    (data / "trips").mkdir()
    pq.write_table(trips.slice(0, 300), data / "trips" / "a.parquet")
    second = trips.slice(300).to_pylist()
    for r in second:
        r["trip_id"], r["distance"] = str(r["trip_id"]), str(r["distance"])
    second[7]["distance"] = "far"
    pq.write_table(pa.Table.from_pylist(second), data / "trips" / "b.parquet")
    raw = small_config(data, tmp_path / "root", fmt="parquet")
    raw["data"]["sources"]["trips"]["path"] = str(data / "trips")
    result = _run(raw)
    rows = result.manifest["rows"]
    assert (rows["read"], rows["clean"], rows["quarantined"]) == (600, 599, 1)
    q = pq.read_table(tmp_path / "root" / "datasets" / "trips" / result.key / "quarantine").to_pylist()
    assert [(r["rule"], r["column"], r["value"]) for r in q] == [("type", "distance", "far")]


def test_a_header_that_names_a_column_twice_is_refused_naming_it(ray_local, small_data):
    """`a,a,b`: Arrow cannot pick either copy by name (the read failed with "Field exists 2 times
    in schema", naming no file), and which copy is meant is not rayline's to guess."""
    data, root = small_data
    lines = (data / "vehicles.csv").read_text().splitlines()
    (data / "vehicles.csv").write_text("\n".join([lines[0] + ',"seats"'] + [l + ",1" for l in lines[1:]]) + "\n")
    with pytest.raises(InputError, match=r"source 'vehicles': file .*vehicles.csv names a column more than once "
                                         r"\('seats' at columns 2, 4\): rename or remove the copies"):
        _run(small_config(data, root))


def test_a_csv_saved_in_cp1252_names_the_encoding_setting_then_reads_with_it(ray_local, tmp_path):
    """Excel on Windows saves CSV as cp1252: 'Zürich' is one byte 0xFC, not UTF-8. Undeclared, the
    run stops naming the line and `data.sources.<name>.encoding`; declared, the text is read as
    written (the category the endpoint's JSON clients send)."""
    import pyarrow as pa

    data = tmp_path / "data"
    tables = small_tables()
    makers = tables["vehicles"].column("maker").to_pylist()
    tables["vehicles"] = tables["vehicles"].set_column(2, "maker", pa.array(["Zürich" if m == "X" else m for m in makers]))
    write_tables(tables, data)
    path = data / "vehicles.csv"
    path.write_bytes(path.read_text(encoding="utf-8").encode("cp1252"))
    raw = small_config(data, tmp_path / "root")
    raw["data"]["sources"]["vehicles"]["columns"] = {"maker": {"type": "string"}}
    with pytest.raises(InputError, match=r"vehicles.csv.*bytes that are not UTF-8 text: declare its encoding "
                                         r"\(data.sources.vehicles.encoding cp1252"):
        _run(raw)
    raw["data"]["sources"]["vehicles"]["encoding"] = "cp1252"
    result = _run(raw)
    maker = next(c for c in result.spec.categorical if c.name == "maker")
    assert "Zürich" in maker.vocabulary and result.manifest["rows"]["quarantined"] == 0


def test_a_sparse_column_no_one_uses_does_not_stop_the_read(ray_local, tmp_path):
    """`notes` is empty for the first 50,000 rows (Arrow types it null from the first block), then
    text. Nothing uses it: it is carried as text, and a quarantined row still shows it."""
    import pyarrow as pa

    data = tmp_path / "data"
    tables = small_tables(60000)
    notes = [None] * 50000 + ["late by fog"] * 10000
    tables["trips"] = tables["trips"].append_column("notes", pa.array(notes, pa.string()))
    write_tables(tables, data)
    lines = (data / "trips.csv").read_text().splitlines()
    fields = lines[55000].split(",")
    fields[3] = "far"
    lines[55000] = ",".join(fields)
    (data / "trips.csv").write_text("\n".join(lines) + "\n")
    result = _run(small_config(data, tmp_path / "root"))
    assert result.manifest["rows"]["read"] == 60000 and result.manifest["rows"]["quarantined"] == 1
    (q,) = pq.read_table(tmp_path / "root" / "datasets" / "trips" / result.key / "quarantine").to_pylist()
    assert q["column"] == "distance" and '"notes":"late by fog"' in q["row"]


def test_a_storage_root_that_cannot_be_written_stops_the_ingest_naming_it(ray_local, small_data):
    from rayline.errors import StorageError

    data, root = small_data
    (data / "not_a_dir").write_text("x")
    with pytest.raises(StorageError, match=r"storage.root .*not_a_dir/root cannot be written"):
        _run(small_config(data, data / "not_a_dir" / "root"))
