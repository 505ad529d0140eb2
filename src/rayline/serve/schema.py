"""Request validation generated from the FeatureSpec.

Every way a body can be wrong maps to a 4xx with a message naming the field and the problem:
malformed JSON, NaN/Infinity, wrong types, missing required fields, unknown fields, values
outside the configured ranges or allowed values, empty or oversized batches. Nothing here can
raise anything but RequestError, so bad input never becomes a 5xx.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from rayline.features.spec import FeatureSpec


@dataclass
class RequestError(Exception):
    status: int
    reason: str  # short machine-readable class, used as a metric label
    message: str

    def __str__(self) -> str:
        return self.message


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON (numbers must be finite)")


def parse_body(body: bytes, max_bytes: int) -> Any:
    if len(body) > max_bytes:
        raise RequestError(413, "too_large", f"request body is {len(body):,} bytes; the limit is {max_bytes:,}")
    if not body.strip():
        raise RequestError(400, "empty_body", "request body is empty; send a JSON object")
    try:
        return json.loads(body, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as e:
        raise RequestError(400, "malformed_json", f"request body is not valid JSON: {e}") from None


def request_schema(spec: FeatureSpec) -> dict:
    """JSON Schema of one instance (shown at GET /model and in the OpenAPI docs)."""
    props: dict[str, dict] = {}
    kinds = spec.raw_kinds()
    for name, kind in kinds.items():
        c = spec.constraints.get(name)
        p: dict[str, Any] = {"number": {"type": ["number", "null"]}, "float": {"type": ["number", "null"]},
                             "string": {"type": ["string", "integer", "null"]},
                             "timestamp": {"type": ["string", "null"], "format": "date-time"}}[kind].copy()
        if c is not None:
            if c.min is not None:
                p["minimum"] = c.min
            if c.max is not None:
                p["maximum"] = c.max
            if c.allowed is not None:
                p["enum"] = c.allowed
        num = next((n for n in spec.numeric if n.name == name), None)
        if num is not None and num.min is not None:
            p["description"] = f"seen in training: {num.min:g} to {num.max:g}; missing values are imputed"
        cat = next((x for x in spec.categorical if x.name == name), None)
        if cat is not None:
            p["description"] = f"{len(cat.vocabulary)} known values; others use the out-of-vocabulary bucket"
        props[name] = p
    required = sorted(n for n, c in spec.constraints.items() if c.required and n in kinds)
    return {"type": "object", "properties": props, "required": required, "additionalProperties": False}


def validate_instances(payload: Any, spec: FeatureSpec, max_instances: int) -> list[dict]:
    """Body -> list of clean records (still raw values); RequestError on the first problem."""
    if isinstance(payload, dict) and "instances" in payload:
        extra = sorted(set(payload) - {"instances"})
        if extra:
            raise RequestError(422, "unknown_field", f"unknown top-level field(s) {extra}; expected only 'instances'")
        instances = payload["instances"]
        if not isinstance(instances, list):
            raise RequestError(422, "wrong_type", f"'instances' must be a list of objects, got {_tname(instances)}")
        if not instances:
            raise RequestError(422, "empty_batch", "'instances' is empty; send at least one record")
        if len(instances) > max_instances:
            raise RequestError(413, "batch_too_large", f"'instances' has {len(instances):,} records; the limit is {max_instances:,}")
    elif isinstance(payload, dict):
        instances = [payload]
    else:
        raise RequestError(422, "wrong_type", f"expected a JSON object (one record) or {{'instances': [...]}}, got {_tname(payload)}")
    kinds = spec.raw_kinds()
    return [_check_record(i, r, kinds, spec, len(instances) > 1 or "instances" in payload) for i, r in enumerate(instances)]


def _check_record(i: int, rec: Any, kinds: dict[str, str], spec: FeatureSpec, batched: bool) -> dict:
    where = f"instances[{i}]" if batched else "record"
    if not isinstance(rec, dict):
        raise RequestError(422, "wrong_type", f"{where} must be a JSON object, got {_tname(rec)}")
    unknown = sorted(k for k in rec if k not in kinds)
    if unknown:
        raise RequestError(422, "unknown_field", f"{where}: unknown field(s) {unknown[:10]}; "
                                                 f"accepted fields are {sorted(kinds)}")
    for name, c in spec.constraints.items():
        if c.required and name in kinds and rec.get(name) is None:
            raise RequestError(422, "missing_field", f"{where}.{name} is required")
    for name, value in rec.items():
        if value is None:
            continue
        kind = kinds[name]
        field = f"{where}.{name}"
        if kind == "float":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise RequestError(422, "wrong_type", f"{field} must be a number, got {_tname(value)} {_short(value)}")
            if isinstance(value, float) and not math.isfinite(value):
                raise RequestError(422, "not_finite", f"{field} must be finite, got {value}")
        elif kind == "string":
            if isinstance(value, bool) or not isinstance(value, (str, int)):
                raise RequestError(422, "wrong_type", f"{field} must be a string, got {_tname(value)} {_short(value)}")
            if isinstance(value, str) and len(value) > 256:
                raise RequestError(422, "too_long", f"{field} is {len(value)} characters; the limit is 256")
        elif kind == "timestamp":
            if not isinstance(value, str):
                raise RequestError(422, "wrong_type", f"{field} must be an ISO 8601 date-time string, got {_tname(value)}")
            if not _parses_as_time(value):
                raise RequestError(422, "wrong_type", f"{field} is not an ISO 8601 date-time: {_short(value)}")
        c = spec.constraints.get(name)
        if c is None:
            continue
        if kind == "float" and ((c.min is not None and value < c.min) or (c.max is not None and value > c.max)):
            raise RequestError(422, "out_of_range", f"{field} = {value} is outside the allowed range [{c.min}, {c.max}]")
        if c.allowed is not None and str(value) not in c.allowed:
            raise RequestError(422, "not_allowed", f"{field} = {_short(value)} is not one of the allowed values {c.allowed[:20]}")
    return rec


def _parses_as_time(text: str) -> bool:
    from rayline.features.coerce import _parse_timestamp

    return len(text) <= 40 and _parse_timestamp(text) is not None


def _tname(v: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer", float: "number",
            type(None): "null"}.get(type(v), type(v).__name__)


def _short(v: Any) -> str:
    text = json.dumps(v)
    return text if len(text) <= 60 else text[:57] + "..."
