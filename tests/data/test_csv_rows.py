"""The CSV reader (data/csv_rows.py), without a cluster: broken lines become rows for the
quarantine, declared columns are read as text, an undeclared column's bad value is named."""


import pyarrow as pa
import pytest

from rayline.data.csv_rows import BAD_ROW, CSVReadError, read_tables


def _read(data: bytes, **kw) -> pa.Table:
    return pa.concat_tables(list(read_tables(pa.BufferReader(data), **kw)), promote_options="permissive")


def test_lines_with_the_wrong_number_of_fields_become_rows_saying_where_and_why():
    t = _read(b'a,b,c\n1,2,x\n3,4\n5,6,y,z\n7,8,w\n"9,10,q\n11,12,v\n')
    good = t.filter(pa.compute.is_null(t.column(BAD_ROW)))
    assert good.select(["a", "b", "c"]).to_pylist() == [{"a": 1, "b": 2, "c": "x"}, {"a": 7, "b": 8, "c": "w"}]
    assert t.filter(pa.compute.is_valid(t.column(BAD_ROW))).column(BAD_ROW).to_pylist() == [
        "line 3: 2 field(s) where the header has 3: '3,4'",
        "line 4: 4 field(s) where the header has 3: '5,6,y,z'",
        "line 6: 1 field(s) where the header has 3: '\"9,10,q\\n11,12,v'",  # an unclosed quote: the rest of the file
    ]
    assert t.num_rows == 5  # every line is a row: none silently dropped
    bad = t.filter(pa.compute.is_valid(t.column(BAD_ROW)))
    assert bad.column("a").null_count == bad.num_rows


def test_a_long_broken_line_is_shown_cut():
    t = _read(b"a,b\n" + b"x," * 500 + b"y\n")
    (why,) = t.column(BAD_ROW).to_pylist()
    assert why.startswith("line 2: 501 field(s) where the header has 2: 'x,x,") and why.endswith("...'") and len(why) < 300


def test_declared_columns_are_read_as_text_and_others_inferred():
    t = _read(b"zip,n,when\n02134,7,2024-01-01\n10001,8,2024-01-02\n", text=("zip",))
    assert t.schema.field("zip").type == pa.string() and t.column("zip").to_pylist() == ["02134", "10001"]
    assert t.schema.field("n").type == pa.int64() and pa.types.is_date(t.schema.field("when").type)


def test_a_value_past_the_first_block_in_an_undeclared_column_names_line_column_and_setting():
    data = b"id,x\n" + b"".join(b"%d,1.5\n" % i for i in range(200000)) + b"A7,2.5\n"
    with pytest.raises(CSVReadError) as e:
        _read(data, setting="data.sources.t.columns")
    msg = str(e.value)
    assert msg.startswith("line 200002: column 'id' holds 'A7', which is not int64")
    assert "declare its type (data.sources.t.columns.id: {type: ...})" in msg
    # reading only some columns, Arrow counts the file's: the name is still the right one
    with pytest.raises(CSVReadError, match=r"^line 200002: column 'id' holds 'A7'"):
        _read(b"w," + data.replace(b"\n", b"\n1,")[:-2], columns=["x", "id"])  # w,id,x: 'id' is the file's second
    # declared, it is text everywhere: the rule judges "A7" for its row alone
    assert _read(data, text=("id",)).column("id").to_pylist()[-1] == "A7"


def test_only_the_columns_asked_for_absent_ones_as_nulls_and_a_header_alone():
    t = _read(b"a\tb\n1\t2\n", delimiter="\t", columns=["b", "missing"])
    assert t.to_pylist() == [{"b": 2, "missing": None, BAD_ROW: None}]
    empty = _read(b"a,b\n")
    assert empty.num_rows == 0 and empty.column_names == ["a", "b", BAD_ROW]


def test_bytes_that_are_not_utf8_name_the_line_and_the_fix():
    with pytest.raises(CSVReadError, match=r"^line 3, column #2: bytes that are not UTF-8 text: save the file as UTF-8"):
        _read(b'a,b\n1,x\n2,"\xff\xfey"\n', text=("b",))


def test_a_declared_encoding_is_read_as_text_and_the_hint_names_where_to_declare_it():
    data = "id,city\n1,Zürich\n2,Genève\n".encode("cp1252")
    assert _read(data, text=("city",), encoding="cp1252").column("city").to_pylist() == ["Zürich", "Genève"]
    with pytest.raises(CSVReadError, match=r"declare its encoding \(--encoding cp1252, for one saved by Excel"):
        _read(data, text=("city",), encoding_setting="--encoding")


def test_only_the_columns_a_run_uses_are_typed_the_rest_are_carried_as_text():
    """A sparse column nobody uses (empty in the first block, so typed null) then text further
    down failed the file; given the columns a run types, every other one is read as text."""
    data = b"id,notes,x\n" + b"".join(b"%d,,1.5\n" % i for i in range(200000)) + b"7,delayed by fog,2.5\n"
    with pytest.raises(CSVReadError, match="column 'notes' holds 'delayed by fog', which is not null"):
        _read(data)
    t = _read(data, infer=("id",), text=("x",))
    assert [t.schema.field(c).type for c in ("id", "notes", "x")] == [pa.int64(), pa.string(), pa.string()]
    assert t.num_rows == 200001 and t.column("notes").to_pylist()[-1] == "delayed by fog"
    # the header is read first, then the whole file, once, in order (the bytes held back are replayed)
    assert t.column("id").to_pylist() == list(range(200000)) + [7]


def test_a_decimal_comma_is_read_in_inferred_and_in_declared_number_columns_only():
    data = b"id;x;y;name\n1;3,14;2,5;a,b\n2;-1,0;7;c\n"
    t = _read(data, delimiter=";", text=("x", "name"), decimal=",", numbers=("x",))
    assert t.select(["x", "y", "name"]).to_pylist() == [{"x": "3.14", "y": 2.5, "name": "a,b"},
                                                        {"x": "-1.0", "y": 7.0, "name": "c"}]
