"""Request validation generated from the FeatureSpec: every bad-input class is a 4xx with a message."""

import json

import pytest

from rayline.features.contract import Contract
from rayline.features.spec import CategoricalSpec, Constraint, FeatureSpec, LabelSpec, NumericSpec, TimeSpec
from rayline.serve.schema import RequestError, parse_body, request_schema, validate_instances


@pytest.fixture
def spec():
    return FeatureSpec(
        numeric=[NumericSpec(name="distance", mean=500, std=100, impute=500, min=10, max=4000, null_fraction=0,
                             missing_indicator=True)],
        categorical=[CategoricalSpec(name="carrier", vocabulary=["UA", "AA"], frequencies=[0.6, 0.4])],
        time=[TimeSpec(name="ts", parts=["hour"])],
        label=LabelSpec(column="y", task="binary"),
        constraints={"distance": Constraint(required=True, min=0, max=6000), "carrier": Constraint(allowed=["UA", "AA", "DL"])},
    )


def _err(body, spec, max_instances=10, max_bytes=10_000):
    with pytest.raises(RequestError) as e:
        validate_instances(parse_body(body if isinstance(body, bytes) else json.dumps(body).encode(), max_bytes),
                           Contract(spec), max_instances)
    return e.value


def test_valid_single_and_batch(spec):
    t = validate_instances({"distance": 100, "carrier": "UA"}, Contract(spec), 10)
    assert t.to_pylist() == [{"distance": 100.0, "carrier": "UA", "ts": None}]
    t = validate_instances({"instances": [{"distance": 1.5}, {"distance": 2, "ts": "2013-01-01T10:00:00Z"}]}, Contract(spec), 10)
    assert t.num_rows == 2 and str(t.schema.field("ts").type) == "timestamp[us, tz=UTC]"


@pytest.mark.parametrize("body,status,reason,fragment", [
    (b"{not json", 400, "malformed_json", "not valid JSON"),
    (b'{"distance": NaN}', 400, "malformed_json", "NaN is not valid JSON"),
    (b'{"distance": Infinity}', 400, "malformed_json", "Infinity is not valid JSON"),
    (b"   ", 400, "empty_body", "empty"),
    ({"distance": "far"}, 422, "wrong_type", "record.distance must be a finite number (float64 range), got string \"far\""),
    ({"distance": True}, 422, "wrong_type", "must be a finite number (float64 range), got boolean true"),
    ({"carrier": "UA"}, 422, "missing_field", "record.distance is required"),
    ({"distance": 1, "bogus": 2}, 422, "unknown_field", "unknown field(s) ['bogus']"),
    ({"distance": -5}, 422, "out_of_range", "record.distance = -5.0 is outside the allowed range [0.0, 6000.0]"),
    ({"distance": 5, "carrier": "ZZ"}, 422, "not_allowed", "record.carrier = ZZ is not one of the allowed values"),
    ({"distance": 5, "carrier": ["UA"]}, 422, "wrong_type", "record.carrier must be a string or an integer (a category), got an array of 1"),
    ({"distance": 5, "ts": "yesterday"}, 422, "wrong_type", "record.ts must be an ISO 8601 date-time string"),
    ({"instances": []}, 422, "empty_batch", "'instances' is empty"),
    ({}, 422, "no_input_fields", "record has none of the model's input fields; send at least one of ['carrier', 'distance', 'ts']"),
    ({"instances": [{"distance": 1}, {}]}, 422, "no_input_fields", "instances[1] has none of the model's input fields"),
    ({"instances": [{"distance": 1}] * 11}, 422, "batch_too_large", "the limit is 10"),
    ({"instances": [{"distance": 1}, 7]}, 422, "wrong_type", "instances[1] must be a JSON object, got integer"),
    ({"instances": {"distance": 1}}, 422, "wrong_type", "'instances' must be a list"),
    ({"instances": [{"distance": 1}], "extra": 1}, 422, "unknown_field", "expected only 'instances'"),
    ([1, 2], 422, "wrong_type", "got array"),
    (b"x" * 10_001, 413, "too_large", "the limit is 10,000"),
])
def test_bad_input_classes(spec, body, status, reason, fragment):
    e = _err(body, spec)
    assert (e.status, e.reason) == (status, reason)
    assert fragment in e.message


def test_deeply_nested_json_is_a_4xx(spec):
    e = _err(b"[" * 100_000 + b"]" * 100_000, spec, max_bytes=1_000_000)
    assert e.status in (400, 422)


def test_schema_lists_required_fields_and_constraints(spec):
    s = request_schema(spec)
    assert s["required"] == ["distance"] and s["additionalProperties"] is False
    assert s["anyOf"] == [{"required": ["carrier"]}, {"required": ["distance"]}, {"required": ["ts"]}]  # not {}
    assert s["properties"]["distance"]["maximum"] == 6000
    assert s["properties"]["carrier"]["enum"] == ["UA", "AA", "DL", None]   # optional: null is allowed too
    assert s["properties"]["distance"]["type"] == ["number"]                # required: never null


def test_schema_publishes_bounds_exactly_where_the_contract_checks_them():
    from rayline.features.spec import CategoricalSpec, Constraint, FeatureSpec, LabelSpec, TimeSpec

    spec = FeatureSpec(numeric=[], time=[TimeSpec(name="t", parts=["hour"])],
                       categorical=[CategoricalSpec(name="flight", vocabulary=["1"], frequencies=[1.0])],
                       label=LabelSpec(column="y", task="binary"),
                       constraints={"flight": Constraint(required=True, min=1, max=8500)})
    props = request_schema(spec)["properties"]
    # a category's min/max rule is not checked online: only its text length and 64-bit integer form
    assert props["flight"] == {"type": ["string", "integer"], "maxLength": 256, "minimum": -(2 ** 63),
                               "maximum": 2 ** 63 - 1, "description": "1 known values; others use the out-of-vocabulary bucket"}
    assert props["t"]["type"] == ["string", "null"] and props["t"]["maxLength"] == 40
    assert "1678-01-01 and 2261-12-31" in props["t"]["description"]


def test_an_epoch_format_lets_a_number_name_the_instant_online_as_its_text_does():
    spec = FeatureSpec(numeric=[], time=[TimeSpec(name="ts", parts=["hour"])], categorical=[],
                       label=LabelSpec(column="y", task="binary"), constraints={"ts": Constraint(format=["epoch_ms"])})
    t = validate_instances({"instances": [{"ts": 1356994800000}, {"ts": "1356994800000"}, {"ts": 1356994800000.0}]},
                           Contract(spec), 10)
    assert len(set(t.column("ts").to_pylist())) == 1
    e = _err({"ts": True}, spec)
    assert e.reason == "wrong_type" and "or a number of milliseconds since 1970-01-01 UTC (epoch_ms)" in e.message
    e = _err({"ts": 1e30}, spec)
    assert e.reason == "wrong_type"
    p = request_schema(spec)["properties"]["ts"]
    assert p["type"] == ["string", "number", "null"] and p["maximum"] == pytest.approx(9.2146e12, rel=1e-4)   # 2261-12-31 in ms
    plain = FeatureSpec(numeric=[], time=[TimeSpec(name="ts", parts=["hour"])], categorical=[],
                        label=LabelSpec(column="y", task="binary"))
    assert _err({"ts": 1356994800000}, plain).reason == "wrong_type"      # no epoch format: a number is refused
