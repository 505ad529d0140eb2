"""The Ray Serve application: FastAPI routes (POST /predict on a leaner path) over a model from the registry.

One import path (`rayline.serve.app:app_builder`) serves `rayline serve`, `serve run` /
`serve deploy` with a config file, and a KubeRay RayService's serveConfigV2.

This module holds the deployment and its routes only; the pieces each have one job:
`lifecycle` (which model is served, pinned versions, rollouts), `batch_queue` (which requests
share a batch), `batching` (many requests, one forward pass), `http` (content type, bodies,
request ids), `schema` (parsing records), `monitor` (drift, metrics), `auth` (API keys),
`options` (replica resources), `traffic` (the weighted, sticky split), `shadow` (mirrored
requests), `live_logs` and `live` (the prediction and outcome logs, and the per-version report
over them).
"""

import asyncio
import json
import logging
import math
import os
import random
import time

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from ray import serve

from rayline.config import RaylineConfig, ServeConfig, config_from_dict, format_validation_error, load_config
from rayline.errors import ConfigError, RegistryError
from rayline.features.contract import shown
from rayline.model import boosted
from rayline.model.artifact import torch_threads
from rayline.serve.auth import CHALLENGE, authorized, load_api_keys
from rayline.serve.batch_queue import BatchQueue
from rayline.serve.batching import Item, predict_items, run_counts, score_inputs
from rayline.serve.http import (VERSION_HEADER, FastRoutes, error_response, json_content, json_response, read_body,
                                request_id, within)
from rayline.serve.lifecycle import Loader, ModelHolder, registry_hooks, replica_device
from rayline.serve.live import LIVE, PINNED, SHADOW, check_outcomes, prediction_chunk
from rayline.serve.live_logs import LiveLogs
from rayline.serve.monitor import WINDOW_S, ServeMetrics, drift_report
from rayline.serve.options import CONFIG_ARG, DEPLOYMENT, REPLICA_ARG, REPLICA_LOG, ReplicaArgs, deployment_options
from rayline.serve.schema import (RequestError, explain_flag, first_record, openapi_document, parse_body,
                                  parse_instances, request_schema)
from rayline.serve.shadow import ShadowRunner
from rayline.serve.traffic import key_point, routing_key, traffic_plan

log = logging.getLogger(REPLICA_LOG)
DRIFT_PUSH_S = 5.0


def snapshot_id(model) -> str | None:
    """The lookup snapshot a model's features come through (None: no lookups)."""
    return model.lookups.snapshot if model.lookups is not None else None


# max_ongoing_requests, replicas and resources: deployment_options (the config's, always given).
@serve.deployment(name=DEPLOYMENT, health_check_period_s=10, health_check_timeout_s=30,
                  graceful_shutdown_wait_loop_s=1, graceful_shutdown_timeout_s=20)
@serve.ingress()  # the app is built on each replica: __serve_build_asgi_app__
class ModelServer:
    def __init__(self, args: ReplicaArgs, loader: Loader | None = None, resolver=None, info=None):
        self.args = args  # validated once, in app_builder: nothing is re-validated here
        logging.getLogger(REPLICA_LOG).setLevel(logging.INFO)  # rayline's events, whatever Serve's level
        boosted.lean_imports()  # this replica is rayline's: xgboost without scikit-learn (0.6 s of its start)
        sc = self.sc = args.serve
        self.api_keys = load_api_keys(sc.auth)  # configured but missing: the replica does not start
        self.device = replica_device(sc.gpus_per_replica)
        default_loader, default_resolver, default_info, refresh = registry_hooks(args.storage_root, args.name, self.device,
                                                                                sc.lookup_snapshot)
        self.models = ModelHolder(loader or default_loader, resolver or default_resolver, info or default_info,
                                  self.device, sc.max_versions, refresh if loader is None else None)
        torch_threads(max(1, math.ceil(sc.cpus_per_replica)))  # applied when a network loads (a booster needs no torch)
        self.ref, self.poll_s = args.alias, sc.model_poll_s
        self.arms, self.shadow_ref = [(args.alias, 1.0)], None
        try:
            self.models.follow(self.arms, None)
        except RegistryError:
            # A version deployed before any alias points at one: Serve calls reconfigure() with
            # the deployment's user_config (the model to serve) before the replica takes traffic.
            log.warning(json.dumps({"event": "alias_missing", "ref": self.ref}))
        self.batches = BatchQueue(self._predict_items, sc.max_batch_size, sc.batch_wait_timeout_s)
        self.metrics = ServeMetrics()
        self._watcher: asyncio.Task | None = None
        self._pusher: asyncio.Task | None = None
        self._board_handle = None
        self._replica_id = str(os.getpid())
        self._ongoing = 0  # /predict requests on this replica now (body read, waiting or computing)
        self.logs = LiveLogs.open(args, self._replica_id) if sc.prediction_log.enabled else None
        self._flusher: asyncio.Task | None = None
        self.shadow: ShadowRunner | None = None  # made on the first mirrored request (it needs the event loop)
        self._same_features: dict[tuple, bool] = {}  # (live version, snapshot, shadow version, snapshot) -> reusable

    def __serve_build_asgi_app__(self) -> FastRoutes:
        """Serve calls this once the replica is constructed. Every route is FastAPI's (the OpenAPI
        document is generated from them); POST /predict is answered before FastAPI's routing and
        middleware (http.FastRoutes: they cost a tenth of a batched prediction). The document and
        the docs page carry the served model's record schema and, with API keys on, need a key
        like every route but the probes."""
        api = FastAPI(title="rayline", description="Predictions from a model in the rayline registry.",
                      docs_url=None, openapi_url=None, redoc_url=None)
        api.add_api_route("/predict", self.predict, methods=["POST"])  # body and answers: openapi_document
        api.add_api_route("/model", self.model_info, methods=["GET"])
        api.add_api_route("/outcomes", self.outcomes, methods=["POST"])
        api.add_api_route("/live", self.live, methods=["GET"])
        api.add_api_route("/openapi.json", self.openapi, methods=["GET"], include_in_schema=False)
        api.add_api_route("/docs", self.docs, methods=["GET"], include_in_schema=False)
        api.add_api_route("/healthz", self.healthz, methods=["GET"])
        api.add_api_route("/readyz", self.readyz, methods=["GET"])
        api.add_api_route("/drift", self.drift_report, methods=["GET"])
        return FastRoutes(api, {("POST", "/predict"): self.predict})

    # ------------------------------------------------------------------ following the alias
    def reconfigure(self, user_config: dict) -> None:
        """Serve calls this with the deployment's user_config, at start and on every change (a new
        split, shadow or alias: the replica loads what is new, then swaps; no restart)."""
        self.ref = str(user_config.get("model", self.ref))
        self.poll_s = float(user_config.get("poll_s", self.poll_s))
        arms, shadow = traffic_plan(user_config, self.ref)
        self.models.follow(arms, shadow)
        self.arms, self.shadow_ref = arms, shadow

    async def _watch(self) -> None:
        """Follow the aliases: a promotion reaches live replicas without a redeploy."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                await loop.run_in_executor(None, self.models.follow, self.arms, self.shadow_ref)
            except Exception as e:  # noqa: BLE001 - keep serving the current models
                log.warning(json.dumps({"event": "model_refresh_failed", "ref": self.ref, "error": str(e)[:200]}))

    def __del__(self) -> None:
        """Serve calls this when it stops the replica gracefully (scale-down, redeploy): what the
        logs hold is written, so only a killed replica loses its buffer."""
        logs = getattr(self, "logs", None)
        if logs is not None:
            try:
                logs.flush_all()
            except Exception as e:  # noqa: BLE001 - shutting down: say so, do not raise
                log.warning(json.dumps({"event": "log_flush_at_stop_failed", "error": str(e)[:200]}))

    async def _flush_forever(self) -> None:
        """Write the prediction and outcome logs' parts when due (off the event loop)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(1.0, self.sc.prediction_log.flush_s / 2))
            try:
                await loop.run_in_executor(None, self.logs.flush_due)
            except RuntimeError as e:
                if "after shutdown" in str(e):
                    return  # the replica is stopping: __del__ writes what is left
                log.warning(json.dumps({"event": "log_flush_failed", "error": str(e)[:200]}))
            except Exception as e:  # noqa: BLE001 - the log is kept (bounded) and retried; serving goes on
                log.warning(json.dumps({"event": "log_flush_failed", "error": str(e)[:200]}))

    def _ensure_watcher(self) -> None:
        """Start the background tasks on the first request (the event loop exists only then)."""
        if self._pusher is None:
            loop = asyncio.get_running_loop()
            self._pusher = loop.create_task(self._push_drift_forever())
            if self.poll_s > 0:
                self._watcher = loop.create_task(self._watch())
            if self.logs is not None:
                self._flusher = loop.create_task(self._flush_forever())

    def check_health(self) -> None:
        if self.models.current is None:
            raise RuntimeError("no model loaded")

    # ------------------------------------------------------------------ drift across replicas
    async def _board(self):
        if self._board_handle is None:
            from ray import get_runtime_context

            from rayline.serve.monitor import board_actor

            self._replica_id = get_runtime_context().get_actor_id() or str(os.getpid())
            name = f"rayline-drift-{self.sc.app_name}"
            self._board_handle = await asyncio.get_running_loop().run_in_executor(None, board_actor, name)
        return self._board_handle

    async def _push_drift(self) -> None:
        m = self.models
        if m.current is not None and m.drift is not None:
            board = await self._board()
            await board.push.remote(self._replica_id, m.current[0], m.drift.snapshot())

    async def _push_drift_forever(self) -> None:
        pushed = -1
        while True:
            await asyncio.sleep(DRIFT_PUSH_S)
            try:
                if self.models.drift is not None and self.models.drift.n != pushed:
                    pushed = self.models.drift.n
                    await self._push_drift()
            except Exception as e:  # noqa: BLE001 - drift is advisory; serving goes on
                log.warning(json.dumps({"event": "drift_push_failed", "error": str(e)[:200]}))

    # ------------------------------------------------------------------ prediction
    def _denied(self, request: Request) -> JSONResponse | None:
        if authorized(request.headers.get("authorization"), self.api_keys):
            return None
        self.metrics.invalid("unauthorized")
        return JSONResponse({"error": "unauthorized", "message": "missing or invalid API key: send the header "
                             "'Authorization: Bearer <key>'"}, 401, headers=CHALLENGE)

    def _predict_items(self, items: list[Item]) -> list:
        """The answers now; their drift counts and metrics on the loop's next turn, once the
        answers are on their way (a lone request's response is written before then: nothing
        between here and the socket suspends)."""
        later: list = []
        out = predict_items(items, self.models.drift, self.metrics, later)
        if later:
            asyncio.get_running_loop().call_soon(run_counts, later)
        return out

    async def predict(self, request: Request) -> JSONResponse:
        self._ensure_watcher()
        if denied := self._denied(request):
            return denied
        rid = request_id(request.headers.get("x-request-id"))
        self._ongoing += 1
        try:
            # The replica's own deadline: the proxy's can be lifted by a client header.
            return await within(self._predict(request, rid), self.sc.request_timeout_s)
        except RequestError as e:
            self.metrics.invalid(e.reason)
            return error_response(e, rid)
        except asyncio.TimeoutError:
            return JSONResponse({"error": "timeout", "message": f"not answered within {self.sc.request_timeout_s:g}s",
                                 "request_id": rid}, 503)
        finally:
            self._ongoing -= 1

    async def _predict(self, request: Request, rid: str) -> JSONResponse:
        sc, started = self.sc, time.perf_counter()
        routes = self.models.routes
        if routes is None:
            return JSONResponse({"error": "not_ready", "message": "no model loaded yet", "request_id": rid}, 503)
        if not json_content(request.headers.get("content-type")):
            raise RequestError(415, "unsupported_media_type", "send the body as JSON with the header "
                               "'Content-Type: application/json' (UTF-8)")
        explain = explain_flag(request.query_params) if request.scope.get("query_string") else False
        body = parse_body(await read_body(request, sc.max_body_bytes, sc.body_timeout_s), sc.max_body_bytes)
        pin = request.headers.get(VERSION_HEADER)
        if pin is not None:
            if not (pin.isascii() and pin.isdigit() and len(pin) <= 9):
                raise RequestError(400, "bad_version", f"header {VERSION_HEADER} must be a version number, got {shown(pin, 40)!r}")
            v, model, role, alias = int(pin), await self.models.version(int(pin)), PINNED, ""
        else:  # the split: one routing key, one arm, while the weights hold
            key = routing_key(request.headers.get(sc.routing.header), first_record(body), sc.routing.fields)
            arm = routes.pick(key_point(key if key is not None else rid))
            v, model, role, alias = arm.version, routes.loaded[arm.version], LIVE, arm.alias
        records, batched = parse_instances(body, model.contract, sc.max_instances_per_request)
        item = (v, model, records, batched, explain)
        # The only request on this replica is answered at once: there is nothing to batch it with,
        # and the queue would hold it a few loop turns for others. Under concurrency, requests batch. One
        # yield first, so requests that arrived with this one have started and been counted:
        # nothing above need suspend (a body already received is read without waiting, and
        # `within` makes no task), and with no yield each request would be answered alone before
        # the next one began.
        await asyncio.sleep(0)
        result = self._predict_items([item])[0] if self._ongoing == 1 else await self.batches.submit(item)
        if isinstance(result, RequestError):
            raise result
        snapshot = snapshot_id(model)
        latency_ms = (time.perf_counter() - started) * 1000
        if isinstance(result, Exception):
            log.error(json.dumps({"event": "predict_failed", "request_id": rid, "model_version": v,
                                  "error": f"{type(result).__name__}: {str(result)[:300]}"}))
            self._logged(rid, v, role, alias, snapshot, records, None, latency_ms, 500)
            return JSONResponse({"error": "model_error", "message": "the model could not score this request",
                                 "request_id": rid}, 500)
        preds, version, inputs = result
        # the answer's metrics and log row after it is sent, as its counts (_predict_items)
        asyncio.get_running_loop().call_soon(self._logged, rid, v, role, alias, snapshot, records, preds, latency_ms, 200)
        if role == LIVE and routes.shadow is not None and random.random() < routes.shadow.weight:
            self._mirror(routes, rid, records, v, model, inputs)
        return json_response({"predictions": preds, "model_version": version,
                              **({"lookup_snapshot": snapshot} if snapshot else {}), "request_id": rid},
                             headers={VERSION_HEADER: str(version)})  # the proxy sets x-request-id

    def _logged(self, rid, v, role, alias, snapshot, records, preds, latency_ms, status, count: bool = True) -> None:
        """Metrics per version (unless `count` is False: the caller counts), and the answer into the
        prediction log (buffered; written off the loop)."""
        if count:
            self.metrics.answered(v, role, latency_ms if role != SHADOW else None, failed=status >= 500)
        if self.logs is None:
            return
        scores = labels = None
        if preds is not None:
            scores = [p.get("probability", p.get("value")) if "probabilities" not in p else max(p["probabilities"].values())
                      for p in preds]
            labels = [p.get("label") for p in preds]
        chunk = prediction_chunk(time.time(), rid, v, role, alias, snapshot, records, scores, labels,
                                 latency_ms if role != SHADOW else None, status)
        if not self.logs.predictions.add(chunk, len(records)):
            self.metrics.drop("prediction_log", len(records))

    def _mirror(self, routes, rid: str, records: list[dict], live_version: int, live_model, inputs) -> None:
        """Queue a copy of an answered request for the shadow version (never waits). A shadow with
        the live model's features and snapshot gets the live path's model inputs: only its
        forward pass is extra work."""
        if self.shadow is None:
            self.shadow = ShadowRunner(self._score_shadow, self._record_shadow, self.sc.shadow.queue, self.sc.shadow.timeout_s)
        arm = routes.shadow
        model = routes.loaded[arm.version]
        pair = (live_version, snapshot_id(live_model), arm.version, snapshot_id(model))  # versions are immutable
        same = self._same_features.get(pair)
        if same is None:  # once per pair: comparing specs costs more than a request
            same = live_model.spec == model.spec and pair[1] == pair[3]
            self._same_features = {**(self._same_features if len(self._same_features) < 64 else {}), pair: same}
        if not self.shadow.submit((arm.version, model, records, rid, arm.alias, inputs if same else None)):
            self.metrics.drop("shadow_queue_full")

    @staticmethod
    def _score_shadow(items: list) -> list:
        """Per version: the requests with reusable inputs in one forward pass, the others through
        the whole path. No drift or live metrics: the live answer counted these records."""
        out: list = [None] * len(items)
        for v in {item[0] for item in items}:
            idx = [i for i, item in enumerate(items) if item[0] == v]
            ready = [i for i in idx if items[i][5] is not None]
            if ready:
                try:
                    for i, r in zip(ready, score_inputs(v, items[ready[0]][1], [items[i][5] for i in ready])):
                        out[i] = r
                except Exception as e:  # noqa: BLE001 - recorded per request as a shadow error
                    for i in ready:
                        out[i] = e
            rest = [i for i in idx if items[i][5] is None]
            for i, r in zip(rest, predict_items([(v, items[i][1], items[i][2], True, False) for i in rest])):
                out[i] = r
        return out

    def _record_shadow(self, items: list, results: list) -> None:
        """A scored shadow batch: its rows into the log, its counts into the metrics once per version."""
        counts: dict[tuple[int, bool], int] = {}
        for (v, model, records, rid, alias, _), result in zip(items, results):
            failed = isinstance(result, Exception)
            counts[(v, failed)] = counts.get((v, failed), 0) + 1
            self._logged(rid, v, SHADOW, alias, snapshot_id(model), records, None if failed else result[0], None,
                         500 if failed else 200, count=False)
        for (v, failed), n in counts.items():
            self.metrics.answered(v, SHADOW, None, failed=failed, n=n)

    # ------------------------------------------------------------------ the other routes
    async def model_info(self, request: Request):
        self._ensure_watcher()
        if denied := self._denied(request):
            return denied
        v, model = self.models.current
        lookups = model.lookups
        return {"model_version": v, "following": self.ref, "routes": self.models.routes.describe(),
                "memory_bytes": self.models.memory(), "task": model.spec.label.task, "device": self.device,
                "request_schema": request_schema(model.spec), **self.models.current_info,
                **({"lookups": {"snapshot": lookups.snapshot, "lookups": lookups.names, "bytes": lookups.nbytes,
                                "load_s": lookups.load_s}} if lookups is not None else {})}

    async def outcomes(self, request: Request) -> JSONResponse:
        """The true labels of earlier answers, by request id (and index in the request): all
        valid, or none kept (422 naming each bad record). 202: buffered, written within flush_s."""
        self._ensure_watcher()
        if denied := self._denied(request):
            return denied
        rid = request_id(request.headers.get("x-request-id"))
        try:
            if self.logs is None:
                raise RequestError(409, "log_disabled", "serve.prediction_log.enabled is false: outcomes have no "
                                   "predictions to join")
            if not json_content(request.headers.get("content-type")):
                raise RequestError(415, "unsupported_media_type", "send the body as JSON (application/json, UTF-8)")
            body = parse_body(await read_body(request, self.sc.max_body_bytes, self.sc.body_timeout_s),
                              self.sc.max_body_bytes)
            items = body.get("outcomes") if isinstance(body, dict) and set(body) == {"outcomes"} else None
            if not isinstance(items, list) or not items:
                raise RequestError(422, "wrong_type", 'expected {"outcomes": [{"request_id": ..., "index": 0, '
                                   '"label": ...}, ...]} with at least one outcome')
            if len(items) > self.sc.max_instances_per_request:
                raise RequestError(422, "batch_too_large", f"'outcomes' has {len(items):,} records; the limit is "
                                   f"{self.sc.max_instances_per_request:,}")
            label = self.models.current[1].spec.label
            cols, errors = check_outcomes(items, label.task, label.classes, time.time())
            if errors:
                raise RequestError(422, "invalid_outcome", f"{len(errors)} of {len(items)} outcome(s) invalid: "
                                   f"{errors[0]['message']}", details=errors[:50])
        except RequestError as e:
            self.metrics.invalid(e.reason)
            return error_response(e, rid)
        if not self.logs.outcomes.add(cols, len(items)):
            self.metrics.drop("outcome_log", len(items))
            return JSONResponse({"error": "busy", "message": "the outcome log is full; retry later",
                                 "request_id": rid}, 503, headers={"retry-after": "5"})
        return JSONResponse({"accepted": len(items), "request_id": rid}, 202)

    async def live(self, request: Request):
        """Per version over a window: traffic, errors, latency, scores and, joined with outcomes,
        the metrics with confidence intervals. Reads the logs as written (this replica's buffer
        flushed first; other replicas' are up to flush_s behind)."""
        self._ensure_watcher()
        if denied := self._denied(request):
            return denied
        if self.logs is None or self.models.current is None:
            return JSONResponse({"error": "not_ready", "message": "no model loaded, or the prediction log is off"}, 503)
        window = request.query_params.get("window_s", str(self.sc.live_window_s))
        if not (window.isdigit() and 60 <= int(window) <= 30 * 86400):
            return JSONResponse({"error": "bad_query", "message": "window_s must be whole seconds, 60 to 2592000"}, 400)
        label = self.models.current[1].spec.label
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.logs.flush_all)
        report = await loop.run_in_executor(None, self.logs.report, label.task, label.classes, int(window))
        return {**report, "routes": self.models.routes.describe(), "replica": self._replica_id,
                "shadow": self.shadow.stats() if self.shadow else None, "log": self.logs.stats(),
                "memory_bytes": self.models.memory()}

    async def openapi(self, request: Request):
        if denied := self._denied(request):
            return denied
        if self.models.current is None:
            return JSONResponse({"error": "not_ready", "message": "no model loaded yet"}, 503)
        return openapi_document(request.app.openapi(), self.models.current[1].spec,
                                self.sc.max_instances_per_request, bool(self.api_keys))

    async def docs(self, request: Request):
        if denied := self._denied(request):
            return denied
        from fastapi.openapi.docs import get_swagger_ui_html

        return get_swagger_ui_html(openapi_url=f"{request.scope.get('root_path', '')}/openapi.json", title="rayline")

    async def healthz(self) -> dict:
        return {"status": "ok"}

    async def readyz(self) -> JSONResponse:
        self._ensure_watcher()
        if self.models.current is None:
            return JSONResponse({"ready": False}, 503)
        return JSONResponse({"ready": True, "model_version": self.models.current[0]})

    async def drift_report(self, request: Request):
        if denied := self._denied(request):
            return denied
        self._ensure_watcher()
        m = self.models
        if m.current is None or m.drift is None:
            return JSONResponse({"error": "not_ready", "message": "no model loaded yet"}, 503)
        v, local = m.current[0], m.drift.snapshot()
        snapshots, note = [local], None
        try:  # every replica's counts, not only the one this request reached
            await asyncio.wait_for(self._push_drift(), 5)
            board = await self._board()
            snapshots = await asyncio.wait_for(board.collect.remote(v, WINDOW_S), 5) or [local]
        except Exception as e:  # noqa: BLE001 - fall back to this replica's own counts
            note = f"other replicas' counts unavailable ({type(e).__name__}); this replica only"
        report = drift_report(m.drift.spec, snapshots, time.time() - WINDOW_S)
        return {"replica": os.getpid(), "model_version": v, "observed_records": local["records"],
                "observed_batches": local["batches"], **report, **({"note": note} if note else {})}


def build_app(plan: ReplicaArgs | RaylineConfig, loader: Loader | None = None, resolver=None, model: str | None = None,
              serve_section: ServeConfig | None = None):
    """`serve_section`: the config's serve section, whose traffic split and shadow become the
    deployment's user_config (a RaylineConfig brings its own)."""
    if not isinstance(plan, ReplicaArgs):
        plan, serve_section = ReplicaArgs.from_config(plan), plan.serve
    return ModelServer.options(**deployment_options(plan, model, serve_section)).bind(plan, loader, resolver, None)


def app_builder(args: dict):
    """Entry point for Serve config files, where the one validation happens. args: {replica:
    {...}} (the replicas' plan by value, as `rayline serve-config` writes it, with the split in the
    deployment's user_config), {rayline_config: {...}} (a whole config by value), or {config: PATH,
    set: [dotted=value, ...]} for a config file present on every node."""
    if REPLICA_ARG in args:
        try:
            plan = ReplicaArgs.model_validate(args[REPLICA_ARG])
        except ValidationError as e:
            raise ConfigError(format_validation_error(e, f"args.{REPLICA_ARG}")) from None
        return build_app(plan, model=args.get("model"))
    if CONFIG_ARG in args:
        return build_app(config_from_dict(args[CONFIG_ARG]), model=args.get("model"))
    return build_app(load_config(args["config"], list(args.get("set") or [])), model=args.get("model"))
