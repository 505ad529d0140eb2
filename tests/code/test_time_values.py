"""Timestamps as clients and files spell them: fractional seconds, offsets, declared formats and
zones, and a bounded range judged value by value (never by a value's batch-mates)."""

import time

import numpy as np
import pyarrow as pa
import pytest

from tests.conftest import inputs_of
from rayline.config import ColumnRule, config_from_dict
from rayline.errors import ConfigError
from rayline.features.coerce import TimeParsing, coerce
from rayline.features.contract import Contract, Failures, apply_rules
from rayline.features.spec import Constraint, FeatureSpec, LabelSpec, TimeSpec

UTC_NOON = "2013-06-01 12:00:00+00:00"


def _iso(values, time=TimeParsing()):
    out, bad = coerce(pa.array(values, pa.string()), "timestamp", time)
    return [None if v is None else str(v) for v in out.to_pylist()], bad.tolist()


@pytest.mark.parametrize("text,expected", [
    ("2013-06-01T12:00:00Z", UTC_NOON),
    ("2013-06-01T12:00:00.123Z", "2013-06-01 12:00:00.123000+00:00"),            # JavaScript's toISOString()
    ("2013-06-01T12:00:00.123456", "2013-06-01 12:00:00.123456+00:00"),          # Python's isoformat()
    ("2013-06-01T12:00:00.123456789Z", "2013-06-01 12:00:00.123456+00:00"),      # truncated to microseconds
    ("2013-06-01T14:00:00+02:00", UTC_NOON),
    ("2013-06-01 14:00:00.5+0200", "2013-06-01 12:00:00.500000+00:00"),
    ("2013-06-01", "2013-06-01 00:00:00+00:00"),
    (" 2013-06-01T12:00:00Z ", UTC_NOON),
])
def test_iso_8601_as_mainstream_clients_send_it(text, expected):
    assert _iso([text]) == ([expected], [False])


@pytest.mark.parametrize("text", ["1000-01-01T00:00:00Z", "0000-01-01", "9999-12-31T23:59:59Z",
                                  "1677-12-31T23:59:59Z", "2262-01-01T00:00:00Z", "yesterday"])
def test_instants_outside_the_range_are_refused_alone_and_beside_others(text):
    assert _iso([text]) == ([None], [True])
    assert _iso([text, "2013-06-01T12:00:00Z"]) == ([None, UTC_NOON], [True, False])
    assert _iso(["2013-06-01T12:00:00Z", text, "2013-06-01T12:00:00Z"])[1] == [False, True, False]


def test_the_range_edges_are_accepted():
    assert _iso(["1678-01-01T00:00:00Z", "2261-12-31T23:59:59.999999Z"])[1] == [False, False]


def test_typed_timestamps_too_are_bounded_and_nanoseconds_truncate():
    ns = pa.array([np.datetime64("2013-06-01T12:00:00.123456789", "ns")], pa.timestamp("ns"))
    out, bad = coerce(ns, "timestamp")
    assert str(out[0].as_py()) == "2013-06-01 12:00:00.123456+00:00" and not bad.any()
    far = pa.array([np.datetime64("1500-01-01", "us"), np.datetime64("2013-01-01", "us")], pa.timestamp("us"))
    assert coerce(far, "timestamp")[1].tolist() == [True, False]


def test_declared_formats_and_zone():
    fmt = TimeParsing(("%Y/%m/%d", "%d.%m.%Y %H:%M"), "America/New_York")
    got, bad = _iso(["2012/01/01", "31.12.2012 23:30", "2013-06-01T12:00:00Z", "2013-06-01T08:00:00", "01-01-2012", None],
                    fmt)
    assert got == ["2012-01-01 05:00:00+00:00", "2013-01-01 04:30:00+00:00", UTC_NOON, UTC_NOON, None, None]
    assert bad == [False, False, False, False, True, False]
    # Without the format the same text is a type error (what a user sees before declaring it).
    assert _iso(["2012/01/01"]) == ([None], [True])


def test_a_wall_clock_time_that_daylight_saving_skips_or_repeats_is_not_an_error():
    got, bad = _iso(["2013-03-10T02:30:00", "2013-11-03T01:30:00"], TimeParsing((), "America/New_York"))
    assert not any(bad) and all(got)


def test_rules_carry_the_format_through_the_shared_validator():
    rules = {"d": ColumnRule(type="timestamp", format="%Y/%m/%d", nullable=False)}
    failures = Failures(3)
    typed = apply_rules(pa.table({"d": ["2012/01/01", "2012-01-02", "2012/13/01"]}), rules, failures)
    assert typed.column("d").to_pylist()[1].day == 2
    assert failures.bad.tolist() == [False, False, True] and failures.first(2)[:2] == ("type", "d")


def _spec(**constraint):
    return FeatureSpec(numeric=[], categorical=[], time=[TimeSpec(name="t", parts=["hour", "month", "us_holiday"])],
                       label=LabelSpec(column="y", task="binary"), constraints={"t": Constraint(**constraint)})


def test_online_the_contract_honours_the_format_and_names_the_range():
    contract = Contract(_spec(required=True, format=["%Y/%m/%d"]))
    table, f = contract.check_records([{"t": "2012/07/04"}, {"t": "1000-01-01T00:00:00Z"}, {"t": "2013-06-01T12:00:00.123Z"}])
    assert f.bad.tolist() == [False, True, False]
    message = contract.message(*f.first(1))
    assert message.startswith("t must be an ISO 8601 date-time string") and "%Y/%m/%d" in message
    assert "1678-01-01 and 2261-12-31" in message


def test_the_transform_takes_fractional_seconds_and_every_year_of_the_range():
    spec = _spec()
    x = inputs_of(spec, [{"t": "2013-07-04T12:00:00.123Z"}, {"t": "1678-01-01T00:00:00Z"},
                                {"t": "2261-12-31T23:59:59.999999Z"}]).num
    assert np.isfinite(x).all() and x[0, -1] == 0.0  # July 4: a holiday


def test_holiday_lookup_costs_the_same_for_any_years():
    spec = _spec()
    inputs_of(spec, [{"t": "2013-01-01T00:00:00Z"}])  # the table is built once per process
    def timed(records):
        t0 = time.perf_counter()
        for _ in range(20):
            inputs_of(spec, records)
        return time.perf_counter() - t0
    typical = timed([{"t": "2013-06-01T12:00:00Z"}, {"t": "2013-06-02T12:00:00Z"}])
    spread = timed([{"t": "1679-06-01T12:00:00Z"}, {"t": "2260-06-02T12:00:00Z"}])
    assert spread < 3 * typical + 0.01  # no calendar built per request (was 10-30x)


@pytest.mark.parametrize("rule,message", [
    ({"type": "timestamp", "format": "%Y/%m/%f"}, "%f (fractional seconds) is not supported"),
    ({"type": "timestamp", "format": "%Y/%m/%Q"}, "unknown directive"),
    ({"type": "timestamp", "format": "2012-01-01"}, "has no % directive"),
    ({"type": "timestamp", "timezone": "Mars/Olympus"}, "unknown IANA time zone"),
    ({"type": "float", "format": "%Y"}, "only apply to timestamp columns"),
])
def test_config_validate_checks_formats_and_zones(rule, message, tmp_path):
    raw = {"name": "x", "task": "binary", "storage": {"root": str(tmp_path)},
           "data": {"primary": "t", "sources": {"t": {"format": "csv", "path": "x.csv", "columns": {"d": rule}}},
                    "label": {"column": "y"}, "features": {"numeric": ["a"]}}}
    with pytest.raises(ConfigError) as e:
        config_from_dict(raw)
    assert message in str(e.value) and "data.sources.t.columns.d" in str(e.value)
