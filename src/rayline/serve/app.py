"""The Ray Serve application: a FastAPI ingress over a model from the registry.

One import path (`rayline.serve.app:app_builder`) serves `rayline serve`, `serve run` /
`serve deploy` with a config file, and a KubeRay RayService's serveConfigV2.

This module holds the deployment and its routes only; the pieces each have one job:
`lifecycle` (which model is served, pinned versions, rollouts), `batching` (many requests, one
forward pass), `http` (content type, bodies, request ids), `schema` (parsing records),
`monitor` (drift, metrics), `auth` (API keys), `options` (replica resources).
"""

import asyncio
import json
import logging
import math
import os
import time

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from ray import serve

from rayline.config import RaylineConfig, ServeConfig, config_from_dict, format_validation_error, load_config
from rayline.errors import ConfigError, RegistryError
from rayline.features.contract import shown
from rayline.serve.auth import CHALLENGE, authorized, load_api_keys
from rayline.serve.batching import Item, predict_items
from rayline.serve.http import VERSION_HEADER, error_response, json_content, read_body, request_id
from rayline.serve.lifecycle import Loader, ModelHolder, registry_hooks, replica_device
from rayline.serve.monitor import WINDOW_S, ServeMetrics, drift_report
from rayline.serve.options import CONFIG_ARG, DEPLOYMENT, REPLICA_ARG, ReplicaArgs, deployment_options
from rayline.serve.schema import (RequestError, explain_flag, openapi_document, parse_body, parse_instances,
                                  request_schema)

log = logging.getLogger("ray.serve")
DRIFT_PUSH_S = 5.0

# The document and the docs page are routes of the deployment (below): they carry the served
# model's record schema and, with API keys on, need a key like every route but the probes.
api = FastAPI(title="rayline", description="Predictions from a model in the rayline registry.",
              docs_url=None, openapi_url=None, redoc_url=None)


# Everything the routes below call must be imported or defined above them: @serve.ingress
# pickles the FastAPI app by value when the class is defined, with the module globals that exist then.
_SERVE_DEFAULTS = ServeConfig()  # @serve.batch needs numbers here; each replica sets its plan's in __init__


# max_ongoing_requests, replicas and resources: deployment_options (the config's, always given).
@serve.deployment(name=DEPLOYMENT, health_check_period_s=10, health_check_timeout_s=30,
                  graceful_shutdown_wait_loop_s=1, graceful_shutdown_timeout_s=20)
@serve.ingress(api)
class ModelServer:
    def __init__(self, args: ReplicaArgs, loader: Loader | None = None, resolver=None, info=None):
        import torch

        self.args = args  # validated once, in app_builder: nothing is re-validated here
        sc = self.sc = args.serve
        self.api_keys = load_api_keys(sc.auth)  # configured but missing: the replica does not start
        self.device = replica_device(sc.gpus_per_replica)
        default_loader, default_resolver, default_info = registry_hooks(args.storage_root, args.name, self.device)
        self.models = ModelHolder(loader or default_loader, resolver or default_resolver, info or default_info,
                                  self.device)
        torch.set_num_threads(max(1, math.ceil(sc.cpus_per_replica)))
        self.ref, self.poll_s = args.alias, sc.model_poll_s
        try:
            self.models.switch(self.ref)
        except RegistryError:
            # A version deployed before any alias points at one: Serve calls reconfigure() with
            # the deployment's user_config (the model to serve) before the replica takes traffic.
            log.warning(json.dumps({"event": "alias_missing", "ref": self.ref}))
        self._predict_batch.set_max_batch_size(sc.max_batch_size)
        self._predict_batch.set_batch_wait_timeout_s(sc.batch_wait_timeout_s)
        self.metrics = ServeMetrics()
        self._watcher: asyncio.Task | None = None
        self._pusher: asyncio.Task | None = None
        self._board_handle = None
        self._replica_id = str(os.getpid())
        self._ongoing = 0  # /predict requests on this replica now (body read, waiting or computing)

    # ------------------------------------------------------------------ following the alias
    def reconfigure(self, user_config: dict) -> None:
        """Serve calls this with the deployment's user_config, at start and on every change."""
        self.ref = str(user_config.get("model", self.ref))
        self.poll_s = float(user_config.get("poll_s", self.poll_s))
        self.models.switch(self.ref)

    async def _watch(self) -> None:
        """Follow the alias: a promotion reaches live replicas without a redeploy."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                await loop.run_in_executor(None, self.models.switch, self.ref)
            except Exception as e:  # noqa: BLE001 - keep serving the current model
                log.warning(json.dumps({"event": "model_refresh_failed", "ref": self.ref, "error": str(e)[:200]}))

    def _ensure_watcher(self) -> None:
        """Start the background tasks on the first request (the event loop exists only then)."""
        if self._pusher is None:
            loop = asyncio.get_running_loop()
            self._pusher = loop.create_task(self._push_drift_forever())
            if self.poll_s > 0:
                self._watcher = loop.create_task(self._watch())

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
        return predict_items(items, self.models.drift, self.metrics)

    @serve.batch(max_batch_size=_SERVE_DEFAULTS.max_batch_size, batch_wait_timeout_s=_SERVE_DEFAULTS.batch_wait_timeout_s)
    async def _predict_batch(self, items: list[Item]) -> list:
        return self._predict_items(items)

    @api.post("/predict")  # its request body and answers are published by openapi_document
    async def predict(self, request: Request) -> JSONResponse:
        self._ensure_watcher()
        if denied := self._denied(request):
            return denied
        rid = request_id(request.headers.get("x-request-id"))
        self._ongoing += 1
        try:
            # The replica's own deadline: the proxy's can be lifted by a client header.
            return await asyncio.wait_for(self._predict(request, rid), self.sc.request_timeout_s)
        except RequestError as e:
            self.metrics.invalid(e.reason)
            return error_response(e, rid)
        except asyncio.TimeoutError:
            return JSONResponse({"error": "timeout", "message": f"not answered within {self.sc.request_timeout_s:g}s",
                                 "request_id": rid}, 503)
        finally:
            self._ongoing -= 1

    async def _predict(self, request: Request, rid: str) -> JSONResponse:
        sc = self.sc
        if self.models.current is None:
            return JSONResponse({"error": "not_ready", "message": "no model loaded yet", "request_id": rid}, 503)
        if not json_content(request.headers.get("content-type")):
            raise RequestError(415, "unsupported_media_type", "send the body as JSON with the header "
                               "'Content-Type: application/json' (UTF-8)")
        explain = explain_flag(request.query_params)
        body = await read_body(request, sc.max_body_bytes, sc.body_timeout_s)
        pin = request.headers.get(VERSION_HEADER)
        if pin is not None:
            if not (pin.isascii() and pin.isdigit() and len(pin) <= 9):
                raise RequestError(400, "bad_version", f"header {VERSION_HEADER} must be a version number, got {shown(pin, 40)!r}")
            v, model = int(pin), await self.models.version(int(pin))
        else:
            v, model = self.models.current
        records, batched = parse_instances(parse_body(body, sc.max_body_bytes), model.contract.accepts,
                                           sc.max_instances_per_request)
        item = (v, model, records, batched, explain)
        # The only request on this replica is answered at once: the batch queue's hand-offs cost
        # ~1 ms, and there is nothing to batch it with. Under concurrency, requests batch.
        result = self._predict_items([item])[0] if self._ongoing == 1 else await self._predict_batch(item)
        if isinstance(result, RequestError):
            raise result
        if isinstance(result, Exception):
            log.error(json.dumps({"event": "predict_failed", "request_id": rid, "model_version": v,
                                  "error": f"{type(result).__name__}: {str(result)[:300]}"}))
            return JSONResponse({"error": "model_error", "message": "the model could not score this request",
                                 "request_id": rid}, 500)
        preds, version = result
        snapshot = {"lookup_snapshot": model.lookups.snapshot} if model.lookups is not None else {}
        return JSONResponse({"predictions": preds, "model_version": version, **snapshot, "request_id": rid},
                            headers={VERSION_HEADER: str(version)})  # the proxy sets x-request-id

    # ------------------------------------------------------------------ the other routes
    @api.get("/model")
    async def model_info(self, request: Request):
        self._ensure_watcher()
        if denied := self._denied(request):
            return denied
        v, model = self.models.current
        lookups = model.lookups
        return {"model_version": v, "following": self.ref, "task": model.spec.label.task, "device": self.device,
                "request_schema": request_schema(model.spec), **self.models.current_info,
                **({"lookups": {"snapshot": lookups.snapshot, "lookups": lookups.names, "bytes": lookups.nbytes,
                                "load_s": lookups.load_s}} if lookups is not None else {})}

    @api.get("/openapi.json", include_in_schema=False)
    async def openapi(self, request: Request):
        if denied := self._denied(request):
            return denied
        if self.models.current is None:
            return JSONResponse({"error": "not_ready", "message": "no model loaded yet"}, 503)
        return openapi_document(request.app.openapi(), self.models.current[1].spec,
                                self.sc.max_instances_per_request, bool(self.api_keys))

    @api.get("/docs", include_in_schema=False)
    async def docs(self, request: Request):
        if denied := self._denied(request):
            return denied
        from fastapi.openapi.docs import get_swagger_ui_html

        return get_swagger_ui_html(openapi_url=f"{request.scope.get('root_path', '')}/openapi.json", title="rayline")

    @api.get("/healthz")
    async def healthz(self) -> dict:
        return {"status": "ok"}

    @api.get("/readyz")
    async def readyz(self) -> JSONResponse:
        self._ensure_watcher()
        if self.models.current is None:
            return JSONResponse({"ready": False}, 503)
        return JSONResponse({"ready": True, "model_version": self.models.current[0]})

    @api.get("/drift")
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


def build_app(plan: ReplicaArgs | RaylineConfig, loader: Loader | None = None, resolver=None, model: str | None = None):
    if not isinstance(plan, ReplicaArgs):
        plan = ReplicaArgs.from_config(plan)
    return ModelServer.options(**deployment_options(plan, model)).bind(plan, loader, resolver, None)


def app_builder(args: dict):
    """Entry point for Serve config files, where the one validation happens. args: {replica:
    {...}} (the replicas' plan by value, as `rayline serve-config` writes it), {rayline_config:
    {...}} (a whole config by value), or {config: PATH, set: [dotted=value, ...]} for a config
    file present on every node."""
    if REPLICA_ARG in args:
        try:
            plan = ReplicaArgs.model_validate(args[REPLICA_ARG])
        except ValidationError as e:
            raise ConfigError(format_validation_error(e, f"args.{REPLICA_ARG}")) from None
    elif CONFIG_ARG in args:
        plan = ReplicaArgs.from_config(config_from_dict(args[CONFIG_ARG]))
    else:
        plan = ReplicaArgs.from_config(load_config(args["config"], list(args.get("set") or [])))
    return build_app(plan, model=args.get("model"))
