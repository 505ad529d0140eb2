"""Request validation generated from the FeatureSpec.

Every way a body can be wrong maps to a 4xx with a message naming the field and the problem:
malformed JSON, NaN/Infinity, wrong types, missing required fields, unknown fields, values
outside the configured ranges or allowed values, empty or oversized batches. The values
themselves are judged by the feature contract (`rayline.features.contract`), the same code
batch inference uses; this module adds the HTTP-level shape. Nothing here can raise anything
but RequestError, so bad input never becomes a 5xx.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from rayline.config import EPOCH_FORMATS
from rayline.features.coerce import TIME_MAX, TIME_MIN, TIME_RANGE_TEXT
from rayline.features.contract import MAX_TEXT, MAX_TIME_TEXT, Contract, shown
from rayline.features.spec import FeatureSpec


@dataclass
class RequestError(Exception):
    status: int
    reason: str  # short machine-readable class, used as a metric label
    message: str
    details: list = field(default_factory=list)  # per-record problems, at most 20

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
        # UTF-8 only (RFC 8259): json.loads on bytes would also guess UTF-16 and UTF-32.
        return json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except RecursionError:
        raise RequestError(400, "malformed_json", "request body is not valid JSON: nested too deeply") from None
    except ValueError as e:  # includes UnicodeDecodeError
        raise RequestError(400, "malformed_json", f"request body is not valid JSON: {shown(str(e), 200)}") from None


# float64's largest value, exactly (the decimal 1.7976931348623157e308 is smaller than it: a
# validator comparing digits would call the integers in between out of range)
FLOAT_MAX = int(np.finfo(np.float64).max)
# The canonical spelling of an instant the contract accepts, as a pattern a client (or a fuzzer)
# can generate from: real calendar dates (February to the 28th), fractional seconds, an optional
# zone. Years 1679-2260: inside coerce.TIME_MIN..TIME_MAX whatever the offset. The server accepts
# more (a space for T, a date alone, Feb 29 of leap years, the edge years): the pattern promises
# only what is always accepted. No `format: date-time` beside it: RFC 3339 allows years the
# contract refuses.
TIME_PATTERN = (r"^(1(679|6[89][0-9]|[7-9][0-9]{2})|2([01][0-9]{2}|2([0-5][0-9]|60)))-"
                r"((0[13578]|1[02])-(0[1-9]|[12][0-9]|3[01])|(0[469]|11)-(0[1-9]|[12][0-9]|30)|02-(0[1-9]|1[0-9]|2[0-8]))"
                r"T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?(Z|[+-](0[0-9]|1[0-3]):[0-5][0-9])?$")


def request_schema(spec: FeatureSpec) -> dict:
    """JSON Schema of one instance (shown at GET /model and in the OpenAPI document): exactly what
    the contract enforces. A required field is not nullable; bounds appear where they are checked
    (a number's range, a category's text length and 64-bit integer form); a category's min/max
    rules are not checked online (categories are names), so they are not published."""
    props: dict[str, dict] = {}
    kinds = spec.raw_kinds()
    for name, kind in kinds.items():
        c = spec.constraints.get(name)
        required = bool(c and c.required)
        if kind == "string":
            p: dict[str, Any] = {"type": ["string", "integer"], "maxLength": MAX_TEXT,
                                 "minimum": -(2 ** 63), "maximum": 2 ** 63 - 1}
        elif kind == "timestamp":
            p = {"type": ["string"], "maxLength": MAX_TIME_TEXT, "pattern": TIME_PATTERN,
                 "description": f"ISO 8601, between {TIME_RANGE_TEXT} (UTC when no zone is given)"}
        else:
            p = {"type": ["number"], "minimum": -FLOAT_MAX, "maximum": FLOAT_MAX}
        if not required:
            p["type"] = [*p["type"], "null"]
        if c is not None:
            if kind != "string" and c.min is not None:
                p["minimum"] = c.min
            if kind != "string" and c.max is not None:
                p["maximum"] = c.max
            if c.allowed is not None:
                p["enum"] = [*c.allowed, *([None] if not required else [])]
            if kind == "timestamp" and c.format:
                del p["pattern"]  # the declared formats are spellings of their own
                p["description"] = f"ISO 8601 or one of the formats {c.format}, between {TIME_RANGE_TEXT}"
                epoch = next((EPOCH_FORMATS[f] for f in c.format if f in EPOCH_FORMATS), None)
                if epoch:  # a number too: that many units since 1970-01-01 UTC, within the same range
                    p["type"] = ["string", "number", *(["null"] if not required else [])]
                    p["minimum"], p["maximum"] = TIME_MIN / epoch, TIME_MAX / epoch
                if c.timezone:
                    p["description"] += f"; a value without a zone is in {c.timezone}"
        num = next((n for n in spec.numeric if n.name == name), None)
        if num is not None and num.min is not None:
            p["description"] = f"seen in training: {num.min:g} to {num.max:g}; missing values are imputed"
        cat = next((x for x in spec.categorical if x.name == name), None)
        if cat is not None:
            p["description"] = f"{len(cat.vocabulary)} known values; others use the out-of-vocabulary bucket"
        if name in spec.lookup_columns:
            p["description"] = (p.get("description", "") + "; looked up from the model's lookup snapshot when not "
                                "sent (a value sent wins)").lstrip("; ")
        props[name] = p
    for name, kind in spec.keys.items():
        if name in props:
            continue
        p = {"type": ["string", "integer", "null"], "maxLength": MAX_TEXT, "minimum": -(2 ** 63), "maximum": 2 ** 63 - 1} \
            if kind == "string" else {"type": ["string", "null"], "maxLength": MAX_TIME_TEXT, "pattern": TIME_PATTERN} \
            if kind == "timestamp" else {"type": ["number", "null"], "minimum": -FLOAT_MAX, "maximum": FLOAT_MAX}
        p["description"] = "a key the model's lookups use (joins, counts); without it they find nothing"
        props[name] = p
    for name in spec.accepted:
        props.setdefault(name, {"description": "a column of the primary table: accepted, not used by this model"})
    required = sorted(n for n, c in spec.constraints.items() if c.required and n in kinds)
    inputs = sorted({*kinds, *spec.keys})  # at least one of them (parse_instances)
    return {"type": "object", "properties": props, "required": required, "additionalProperties": False,
            "anyOf": [{"required": [n]} for n in inputs]}


# rule of the shared contract -> the reason an HTTP client (and the metric label) sees
REASONS = {"type": "wrong_type", "not_null": "missing_field", "range": "out_of_range", "allowed": "not_allowed",
           "too_long": "too_long"}


def first_record(payload: Any) -> dict | None:
    """The body's (first) record, before any check: what routing by record fields reads."""
    if isinstance(payload, dict) and "instances" in payload:
        items = payload["instances"]
        return items[0] if isinstance(items, list) and items and isinstance(items[0], dict) else None
    return payload if isinstance(payload, dict) else None


def parse_instances(payload: Any, contract: Contract, max_instances: int) -> tuple[list[dict], bool]:
    """The HTTP-level shape of a body: (records, whether it was {"instances": [...]}). A record
    carries only fields the contract accepts, and at least one the model reads (`{}`, or only
    ignored columns, would be answered on imputed values alone: a client's mistake, as a batch
    file with none of them is). Values are judged later by the contract (see `verdict_error`)."""
    if isinstance(payload, dict) and "instances" in payload:
        extra = sorted(shown(k, 40) for k in payload if k != "instances")
        if extra:
            raise RequestError(422, "unknown_field", f"unknown top-level field(s) {extra[:10]}; expected only 'instances'")
        instances = payload["instances"]
        if not isinstance(instances, list):
            raise RequestError(422, "wrong_type", f"'instances' must be a list of objects, got {_tname(instances)}")
        if not instances:
            raise RequestError(422, "empty_batch", "'instances' is empty; send at least one record")
        if len(instances) > max_instances:
            # 422, not 413: the body is within its byte limit; its shape breaks the contract (maxItems)
            raise RequestError(422, "batch_too_large", f"'instances' has {len(instances):,} records; the limit is {max_instances:,}")
        batched = True
    elif isinstance(payload, dict):
        instances, batched = [payload], False
    else:
        raise RequestError(422, "wrong_type", f"expected a JSON object (one record) or {{'instances': [...]}}, got {_tname(payload)}")
    for i, rec in enumerate(instances):
        where = f"instances[{i}]" if batched else "record"
        if not isinstance(rec, dict):
            raise RequestError(422, "wrong_type", f"{where} must be a JSON object, got {_tname(rec)}")
        unknown = sorted(shown(k, 40) for k in rec if k not in contract.accepts)
        if unknown:
            raise RequestError(422, "unknown_field", f"{where}: unknown field(s) {unknown[:10]}; "
                                                     f"accepted fields are {sorted(contract.accepts)}")
        if not any(k in contract.kinds for k in rec):
            raise RequestError(422, "no_input_fields", f"{where} has none of the model's input fields; "
                                                       f"send at least one of {sorted(contract.kinds)[:30]}")
    return instances, batched


def verdict_error(contract: Contract, failures, start: int, n: int, batched: bool) -> RequestError | None:
    """The 4xx for one request whose records are rows [start, start + n) of a checked table, or
    None when they are all valid. Only the request's own rows decide its answer."""
    bad = np.flatnonzero(failures.bad[start:start + n])
    if not bad.size:
        return None
    details = []
    for i in bad[:20].tolist():
        rule, column, value = failures.first(start + i)
        where = f"instances[{i}]" if batched else "record"
        details.append({"instance": i, "field": column, "rule": rule, "message": f"{where}.{contract.message(rule, column, value)}"})
    more = f" ({bad.size - 1} more invalid record(s) listed in 'errors')" if bad.size > 1 else ""
    return RequestError(422, REASONS.get(details[0]["rule"], details[0]["rule"]), details[0]["message"] + more, details)


def validate_instances(payload: Any, contract: Contract, max_instances: int) -> pa.Table:
    """Body -> typed input columns of valid records; RequestError naming every invalid record's
    first problem (HTTP-level shape here, values by the contract batch inference uses too)."""
    records, batched = parse_instances(payload, contract, max_instances)
    table, failures = contract.check_records(records)
    error = verdict_error(contract, failures, 0, len(records), batched)
    if error is not None:
        raise error
    return table


def _tname(v: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer", float: "number",
            type(None): "null"}.get(type(v), type(v).__name__)


EXPLAIN_VALUES = {"true": True, "1": True, "false": False, "0": False, "": False}


def explain_flag(query) -> bool:
    """`?explain=true` (or 1; false/0 or absent: no explanation). Anything else is the client's error."""
    values = query.getlist("explain") if hasattr(query, "getlist") else [query.get("explain")]
    values = [v for v in values if v is not None]
    if not values:
        return False
    if len(values) > 1 or values[0].lower() not in EXPLAIN_VALUES:
        raise RequestError(400, "bad_query", f"query parameter explain must be true or false, got "
                           f"{shown(','.join(values), 40)!r}")
    return EXPLAIN_VALUES[values[0].lower()]


EXPLANATION_SCHEMA = {"type": "object", "required": ["base", "margin", "units", "contributions"], "properties": {
    "base": {"type": "number"}, "margin": {"type": "number"},
    "units": {"type": "string", "enum": ["log-odds", "class margin", "target", "log1p(target)"]},
    "class": {"type": "string"}, "contributions": {"type": "object", "additionalProperties": {"type": "number"}},
    "lookups": {"type": "object", "additionalProperties": {"type": "string"}}}}


# Every error a route can answer, by status: what the OpenAPI document publishes.
ERRORS = {
    "/predict": {400: "malformed or empty body, a bad version header, a bad explain value, a client that went away, "
                      "or a header Serve reads holding bytes beyond printable ASCII", 401: "missing or invalid API key",
                 404: "the pinned model version does not exist", 408: "the request did not arrive within the body timeout",
                 413: "the body is over serve.max_body_bytes", 415: "the body is not JSON (Content-Type)",
                 422: "a record breaks the contract (the errors list names each field), or more records than "
                      "serve.max_instances_per_request", 500: "the model failed",
                 503: "no model loaded yet, or the request was not answered in time"},
    "/outcomes": {400: "malformed or empty body, or a client that went away", 401: "missing or invalid API key",
                  408: "the request did not arrive within the body timeout", 409: "the prediction log is disabled",
                  413: "the body is over serve.max_body_bytes", 415: "the body is not JSON (Content-Type)",
                  422: "an outcome is invalid (the errors list names each field), or more outcomes than "
                       "serve.max_instances_per_request: none is kept", 503: "the outcome log is full; retry later"},
    "/live": {400: "window_s is not whole seconds from 60 to 2592000", 401: "missing or invalid API key",
              503: "no model loaded yet, or the prediction log is disabled"},
    "/model": {401: "missing or invalid API key"},
    "/drift": {401: "missing or invalid API key", 503: "no model loaded yet"},
    "/readyz": {503: "no model loaded yet"},
}
ERROR_SCHEMA = {"type": "object", "required": ["error", "message"], "properties": {
    "error": {"type": "string"}, "message": {"type": "string"}, "request_id": {"type": "string"},
    "errors": {"type": "array", "items": {"type": "object"}}}}


def outcome_schema(spec: FeatureSpec) -> dict:
    """One outcome as POST /outcomes takes it: the answer's request id, the record's index in its
    request, and the true label in the model's task."""
    task = spec.label.task
    label = ({"anyOf": [{"type": "integer", "enum": [0, 1]}, {"type": "boolean"}]} if task == "binary" else
             {"type": "number"} if task == "regression" else {"type": "string", "enum": list(spec.label.classes or [])})
    return {"type": "object", "required": ["request_id", "label"], "additionalProperties": False, "properties": {
        "request_id": {"type": "string", "pattern": "^[A-Za-z0-9_.:-]{1,64}$"},
        "index": {"type": "integer", "minimum": 0, "maximum": 2 ** 31 - 1}, "label": label}}


def openapi_document(generated: dict, spec: FeatureSpec, max_instances: int, auth: bool) -> dict:
    """FastAPI's document with the contract filled in: the record's fields (from the FeatureSpec),
    both body shapes (`anyOf`: a record has no field `instances`, so a body matches one), and
    every status each route answers with its error body."""
    doc = json.loads(json.dumps(generated))  # a copy: FastAPI caches its own
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas["Record"] = request_schema(spec)
    schemas["Error"] = ERROR_SCHEMA
    schemas["Instances"] = {"type": "object", "required": ["instances"], "additionalProperties": False,
                            "properties": {"instances": {"type": "array", "minItems": 1, "maxItems": max_instances,
                                                         "items": {"$ref": "#/components/schemas/Record"}}}}
    paths = doc.get("paths", {})
    predict = paths.get("/predict", {}).get("post")
    if predict is not None:
        predict["parameters"] = [{"name": "explain", "in": "query", "required": False, "schema": {"type": "boolean"},
                                  "description": "add each prediction's explanation: base + sum(contributions) = margin, "
                                  "per field of the record"}]
        schemas["Explanation"] = EXPLANATION_SCHEMA
        predict["requestBody"] = {"required": True, "content": {"application/json": {"schema": {"anyOf": [
            {"$ref": "#/components/schemas/Record"}, {"$ref": "#/components/schemas/Instances"}]}}}}
        predict["responses"]["200"] = {"description": "one prediction per record, in order", "content": {
            "application/json": {"schema": {"type": "object", "required": ["predictions", "model_version", "request_id"],
                                            "properties": {"predictions": {"type": "array"},
                                                           "model_version": {"type": "integer"},
                                                           "request_id": {"type": "string"}}}}}}
    outcomes = paths.get("/outcomes", {}).get("post")
    if outcomes is not None:
        schemas["Outcome"] = outcome_schema(spec)
        outcomes["requestBody"] = {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "required": ["outcomes"], "additionalProperties": False,
            "properties": {"outcomes": {"type": "array", "minItems": 1, "maxItems": max_instances,
                                        "items": {"$ref": "#/components/schemas/Outcome"}}}}}}}
        outcomes["responses"] = {"202": {"description": "accepted: written to the outcome log within flush_s", "content": {
            "application/json": {"schema": {"type": "object", "required": ["accepted", "request_id"], "properties": {
                "accepted": {"type": "integer"}, "request_id": {"type": "string"}}}}}}}
    live = paths.get("/live", {}).get("get")
    if live is not None:
        live["parameters"] = [{"name": "window_s", "in": "query", "required": False,
                               "schema": {"type": "integer", "minimum": 60, "maximum": 30 * 86400},
                               "description": "seconds back (default serve.live_window_s)"}]
    for path, errors in ERRORS.items():
        for op in paths.get(path, {}).values():
            responses = op.setdefault("responses", {})
            if path not in ("/predict", "/outcomes"):
                responses.pop("422", None)  # FastAPI's default validation error: these routes take no body
            for status, why in errors.items():
                if status == 401 and not auth:
                    continue
                responses[str(status)] = {"description": why, "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    return doc
