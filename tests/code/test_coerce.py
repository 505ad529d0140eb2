"""Value-by-value type coercion used by ingestion and serving."""

import math

import pyarrow as pa

from rayline.features.coerce import coerce


def test_numbers_from_text_flag_only_the_bad_values():
    out, bad = coerce(pa.array(["1.5", " 2 ", "abc", "", "NA", None, "1e3"]), "float")
    assert out.to_pylist() == [1.5, 2.0, None, None, None, None, 1000.0]
    assert bad.tolist() == [False, False, True, False, False, False, False]


def test_int_rejects_fractions_and_nan():
    out, bad = coerce(pa.array([1.0, 2.5, float("nan"), None]), "int")
    assert out.to_pylist() == [1, None, None, None]
    assert bad.tolist() == [False, True, True, False]
    out, bad = coerce(pa.array(["7", "7.0", "7.5"]), "int")
    assert out.to_pylist() == [7, 7, None] and bad.tolist() == [False, False, True]


def test_float_rejects_infinity():
    out, bad = coerce(pa.array([1.0, math.inf, -math.inf]), "float")
    assert out.to_pylist() == [1.0, None, None] and bad.tolist() == [False, True, True]


def test_strings_from_numbers_name_the_same_category():
    assert coerce(pa.array([1545, None]), "string")[0].to_pylist() == ["1545", None]
    assert coerce(pa.array([1545.0, 1.5]), "string")[0].to_pylist() == ["1545", "1.5"]


def test_timestamps_with_and_without_zone():
    out, bad = coerce(pa.array(["2013-01-01T10:00:00Z", "2013-01-01 05:00:00", "garbage", None]), "timestamp")
    vals = out.to_pylist()
    assert vals[0].hour == 10 and vals[1].hour == 5 and vals[2] is None and vals[3] is None
    assert bad.tolist() == [False, False, True, False]


def test_bool_and_wrong_container_types():
    out, bad = coerce(pa.array(["true", "no", "maybe"]), "bool")
    assert out.to_pylist() == [True, False, None] and bad.tolist() == [False, False, True]
    out, bad = coerce(pa.array([[1], None]), "float")
    assert out.to_pylist() == [None, None] and bad.tolist() == [True, False]


def test_all_null_column_of_any_type():
    out, bad = coerce(pa.nulls(3), "timestamp")
    assert out.null_count == 3 and not bad.any()


def test_decimals_are_numbers_and_whole_ones_keep_every_digit_as_a_category():
    """Databases and Spark write DECIMAL columns: once quarantined row by row as 'type'."""
    from decimal import Decimal

    dec = pa.array([Decimal("1.50"), None, Decimal("2")], pa.decimal128(10, 2))
    out, bad = coerce(dec, "float")
    assert out.to_pylist() == [1.5, None, 2.0] and not bad.any()
    out, bad = coerce(pa.array([Decimal("3"), Decimal("1.5")], pa.decimal128(10, 1)), "int")
    assert out.to_pylist() == [3, None] and bad.tolist() == [False, True]
    ids = pa.array([Decimal("12345678901234567890"), None], pa.decimal128(38, 0))   # beyond a float64's digits
    assert coerce(ids, "string")[0].to_pylist() == ["12345678901234567890", None]
    assert coerce(pa.array([Decimal("1545.00")], pa.decimal128(10, 2)), "string")[0].to_pylist() == ["1545"]


def test_bytes_read_as_text_and_bytes_that_are_not_utf8_are_bad_values_not_a_crash():
    """A binary column with one invalid byte sequence once failed the whole batch (ArrowInvalid)."""
    out, bad = coerce(pa.array([b"\xff", b"ab", None]), "string")
    assert out.to_pylist() == [None, "ab", None] and bad.tolist() == [True, False, False]
    out, bad = coerce(pa.array([b"1.5", b"\xfe", b"x"], pa.large_binary()), "float")
    assert out.to_pylist() == [1.5, None, None] and bad.tolist() == [False, True, True]
    out, bad = coerce(pa.array([b"\xff\xfe", b"ab"], pa.binary(2)), "string")
    assert out.to_pylist() == [None, "ab"] and bad.tolist() == [True, False]


def test_epoch_numbers_and_their_text_are_instants_only_where_declared():
    from rayline.features.coerce import TimeParsing

    secs = TimeParsing(("epoch_s",))
    out, bad = coerce(pa.array([1356994800, None, 1356994800.5]), "timestamp", secs)
    assert [v.isoformat() if v else None for v in out.to_pylist()] == \
        ["2012-12-31T23:00:00+00:00", None, "2012-12-31T23:00:00.500000+00:00"] and not bad.any()
    out, bad = coerce(pa.array(["1356994800", "2013-01-01T10:00:00Z", "soon", ""]), "timestamp", secs)  # CSV text
    got = out.to_pylist()
    assert (got[0].year, got[1].hour, got[2], got[3]) == (2012, 10, None, None) and bad.tolist() == [False, False, True, False]
    out, bad = coerce(pa.array([1356994800000.0, 9e30, float("inf")]), "timestamp", TimeParsing(("epoch_ms",)))
    assert out.to_pylist()[0].year == 2012 and bad.tolist() == [False, True, True]   # beyond the range: bad, not wrapped
    assert coerce(pa.array([1356994800]), "timestamp")[1].tolist() == [True]        # undeclared: a number is no instant
