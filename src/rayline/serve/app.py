"""The Ray Serve application: a FastAPI ingress over a model from the registry.

One import path (`rayline.serve.app:app_builder`) serves `rayline serve`, `serve run` /
`serve deploy` with a config file, and a KubeRay RayService's serveConfigV2.

A replica loads its model once, warms it, and serves dynamically batched requests. It follows
a registry reference (an alias such as `production`, or a version): `reconfigure()` (a Serve
`user_config` change) and a light poll of the alias both load and warm the new model *before*
swapping it in, so a rollout never fails a request.
"""


import asyncio
import json
import logging
import math
import os
import time
import uuid
from collections import OrderedDict
from typing import Any, Callable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve

from rayline.config import RaylineConfig, config_from_dict, load_config
from rayline.model.artifact import LoadedModel
from rayline.serve.auth import CHALLENGE, authorized, load_api_keys
from rayline.serve.monitor import DriftTracker
from rayline.serve.schema import RequestError, parse_body, request_schema, validate_instances

log = logging.getLogger("ray.serve")
VERSION_HEADER = "x-model-version"

api = FastAPI(title="rayline", description="Predictions from a model in the rayline registry.",
              docs_url="/docs", openapi_url="/openapi.json")

Loader = Callable[[str], "tuple[int, LoadedModel]"]


def registry_loader(cfg: RaylineConfig) -> Loader:
    from rayline.registry import Registry
    from rayline.storage import Storage

    registry = Registry(Storage(cfg.storage.root), cfg.name)
    return lambda ref: registry.load(ref)


def registry_resolver(cfg: RaylineConfig) -> Callable[[str], int]:
    from rayline.registry import Registry
    from rayline.storage import Storage

    return Registry(Storage(cfg.storage.root), cfg.name).resolve


@serve.deployment(name="ModelServer", max_ongoing_requests=128, health_check_period_s=10, health_check_timeout_s=30,
                  graceful_shutdown_wait_loop_s=1, graceful_shutdown_timeout_s=20)
@serve.ingress(api)
class ModelServer:
    def __init__(self, config: dict, loader: Loader | None = None, resolver: Callable[[str], int] | None = None):
        import torch

        self.cfg = config_from_dict(config)
        sc = self.cfg.serve
        self.api_keys = load_api_keys(sc.auth)  # configured but missing: the replica does not start
        self.loader = loader or registry_loader(self.cfg)
        self.resolver = resolver or registry_resolver(self.cfg)
        torch.set_num_threads(max(1, math.ceil(sc.cpus_per_replica)))
        self.ref, self.poll_s = sc.model_alias, sc.model_poll_s
        self.current: tuple[int, LoadedModel] | None = None
        self.pinned: OrderedDict[int, LoadedModel] = OrderedDict()
        self.drift: DriftTracker | None = None
        self._switch(self.ref)
        self._predict_batch.set_max_batch_size(sc.max_batch_size)
        self._predict_batch.set_batch_wait_timeout_s(sc.batch_wait_timeout_s)
        self._metrics()
        self._watcher: asyncio.Task | None = None

    # ------------------------------------------------------------------ model lifecycle
    def _metrics(self) -> None:
        from ray.util import metrics

        tags = ("model_version",)
        self.m_predictions = metrics.Counter("rayline_predictions", "records predicted", tag_keys=tags)
        self.m_score = metrics.Histogram("rayline_prediction_score", "predicted probability or value",
                                         boundaries=[i / 10 for i in range(1, 10)], tag_keys=tags)
        self.m_invalid = metrics.Counter("rayline_invalid_requests", "rejected requests", tag_keys=("reason",))
        self.m_outside = metrics.Counter("rayline_feature_outside_training_range",
                                         "values outside the range seen in training", tag_keys=("feature",))

    def _switch(self, ref: str) -> None:
        """Load and warm the model `ref` points at, then swap it in (one reference assignment)."""
        version = self.resolver(ref)
        if self.current is not None and self.current[0] == version:
            return
        v, model = self.loader(str(version))
        model.predict_records([{}])  # warm-up: first call allocates
        if self.drift is None or self.drift.spec != model.spec:
            self.drift = DriftTracker(model.spec)
        self.current = (v, model)
        log.info(json.dumps({"event": "model_loaded", "ref": ref, "model_version": v}))

    def reconfigure(self, user_config: dict) -> None:
        """Serve calls this with the deployment's user_config, at start and on every change."""
        self.ref = str(user_config.get("model", self.ref))
        self.poll_s = float(user_config.get("poll_s", self.poll_s))
        self._switch(self.ref)

    async def _watch(self) -> None:
        """Follow the alias: a promotion reaches live replicas without a redeploy."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                await loop.run_in_executor(None, self._switch, self.ref)
            except Exception as e:  # noqa: BLE001 - keep serving the current model
                log.warning(json.dumps({"event": "model_refresh_failed", "ref": self.ref, "error": str(e)}))

    def _ensure_watcher(self) -> None:
        if self._watcher is None and self.poll_s > 0:
            self._watcher = asyncio.get_running_loop().create_task(self._watch())

    def _pinned_model(self, version: int) -> LoadedModel:
        if self.current and self.current[0] == version:
            return self.current[1]
        if version not in self.pinned:
            _, model = self.loader(str(version))
            self.pinned[version] = model
            while len(self.pinned) > 2:
                self.pinned.popitem(last=False)
        self.pinned.move_to_end(version)
        return self.pinned[version]

    def _denied(self, request: Request) -> JSONResponse | None:
        if authorized(request.headers.get("authorization"), self.api_keys):
            return None
        self.m_invalid.inc(tags={"reason": "unauthorized"})
        return JSONResponse({"error": "unauthorized", "message": "missing or invalid API key: send the header "
                             "'Authorization: Bearer <key>'"}, 401, headers=CHALLENGE)

    def check_health(self) -> None:
        if self.current is None:
            raise RuntimeError("no model loaded")

    # ------------------------------------------------------------------ prediction
    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.005)
    async def _predict_batch(self, items: list[tuple[int, LoadedModel, list[dict]]]) -> list[tuple[list, int]]:
        """Many concurrent requests -> one transform and one forward pass per model version."""
        out: list[Any] = [None] * len(items)
        groups: dict[int, list[int]] = {}
        for i, (v, _, _) in enumerate(items):
            groups.setdefault(v, []).append(i)
        for v, idx in groups.items():
            model = items[idx[0]][1]
            records = [r for i in idx for r in items[i][2]]
            inputs = model.spec.transform_records(records)
            preds = model.predict_inputs(inputs)
            if self.drift is not None and model.spec == self.drift.spec:
                for name in self.drift.observe(records, inputs):
                    self.m_outside.inc(tags={"feature": name})
            self.m_predictions.inc(len(records), tags={"model_version": str(v)})
            scores = preds.max(axis=1) if preds.ndim == 2 else preds
            for score in scores.tolist():
                self.m_score.observe(score, tags={"model_version": str(v)})
            start = 0
            for i in idx:
                n = len(items[i][2])
                out[i] = (self._format(model, preds[start:start + n]), v)
                start += n
        return out

    def _format(self, model: LoadedModel, preds) -> list:
        task = model.spec.label.task
        thr = self.cfg.train.threshold
        if task == "binary":
            return [{"probability": float(p), "label": int(p >= thr)} for p in preds]
        if task == "multiclass":
            classes = model.spec.label.classes or []
            return [{"probabilities": dict(zip(classes, map(float, p))), "label": classes[int(p.argmax())]} for p in preds]
        return [{"value": float(p)} for p in preds]

    @api.post("/predict", openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"oneOf": [{"type": "object", "description": "one record"},
                             {"type": "object", "properties": {"instances": {"type": "array"}}}]}}}}})
    async def predict(self, request: Request) -> JSONResponse:
        self._ensure_watcher()
        if denied := self._denied(request):
            return denied
        t0 = time.perf_counter()
        rid = request.headers.get("x-request-id") or uuid.uuid4().hex[:16]
        try:
            if self.current is None:
                return JSONResponse({"error": "not_ready", "message": "no model loaded yet"}, 503)
            declared = request.headers.get("content-length")
            limit = self.cfg.serve.max_body_bytes
            if declared and declared.isdigit() and int(declared) > limit:
                raise RequestError(413, "too_large", f"request body is {int(declared):,} bytes; the limit is {limit:,}")
            body = await request.body()
            pin = request.headers.get(VERSION_HEADER)
            if pin is not None:
                if not pin.isdigit():
                    raise RequestError(400, "bad_version", f"header {VERSION_HEADER} must be a version number, got {pin!r}")
                try:
                    v, model = int(pin), self._pinned_model(int(pin))
                except Exception:  # noqa: BLE001 - unknown version is the client's problem
                    raise RequestError(404, "unknown_version", f"model version {pin} does not exist") from None
            else:
                v, model = self.current
            records = validate_instances(parse_body(body, limit), model.spec, self.cfg.serve.max_instances_per_request)
            preds, version = await self._predict_batch((v, model, records))
        except RequestError as e:
            self.m_invalid.inc(tags={"reason": e.reason})
            log.info(json.dumps({"event": "rejected", "request_id": rid, "status": e.status, "reason": e.reason}))
            return JSONResponse({"error": e.reason, "message": e.message, "request_id": rid}, e.status)
        log.info(json.dumps({"event": "predict", "request_id": rid, "model_version": version, "records": len(records),
                             "ms": round((time.perf_counter() - t0) * 1000, 2)}))
        return JSONResponse({"predictions": preds, "model_version": version, "request_id": rid},
                            headers={"x-model-version": str(version), "x-request-id": rid})

    @api.get("/model")
    async def model_info(self, request: Request):
        self._ensure_watcher()
        if denied := self._denied(request):
            return denied
        v, model = self.current
        from rayline.registry import Registry
        from rayline.storage import Storage

        info: dict[str, Any] = {"model_version": v, "following": self.ref, "task": model.spec.label.task,
                                "request_schema": request_schema(model.spec)}
        try:
            mv = Registry(Storage(self.cfg.storage.root), self.cfg.name).get(v)
            info.update(metrics=mv.metrics, lineage=mv.lineage)
        except Exception as e:  # noqa: BLE001 - metadata is best effort
            info["lineage_error"] = str(e)
        return info

    @api.get("/healthz")
    async def healthz(self) -> dict:
        return {"status": "ok"}

    @api.get("/readyz")
    async def readyz(self) -> JSONResponse:
        self._ensure_watcher()
        if self.current is None:
            return JSONResponse({"ready": False}, 503)
        return JSONResponse({"ready": True, "model_version": self.current[0]})

    @api.get("/drift")
    async def drift_report(self, request: Request):
        if denied := self._denied(request):
            return denied
        return {"replica": os.getpid(), "model_version": self.current[0] if self.current else None,
                **(self.drift.report() if self.drift else {})}


def deployment_options(cfg: RaylineConfig) -> dict:
    """Serve options from the config: the one place serving resources are chosen."""
    sc = cfg.serve
    a = sc.autoscaling
    return {
        "max_ongoing_requests": sc.max_ongoing_requests,
        "autoscaling_config": {"min_replicas": a.min_replicas, "max_replicas": a.max_replicas,
                               "target_ongoing_requests": a.target_ongoing_requests,
                               "upscale_delay_s": a.upscale_delay_s, "downscale_delay_s": a.downscale_delay_s,
                               "initial_replicas": a.min_replicas or 1},
        "ray_actor_options": {"num_cpus": sc.cpus_per_replica, "num_gpus": sc.gpus_per_replica},
        **({"max_replicas_per_node": sc.max_replicas_per_node} if sc.max_replicas_per_node else {}),
        "user_config": {"model": sc.model_alias, "poll_s": sc.model_poll_s},
    }


def build_app(cfg: RaylineConfig, loader: Loader | None = None, resolver=None, model: str | None = None):
    opts = deployment_options(cfg)
    if model is not None:
        opts["user_config"] = {**opts["user_config"], "model": str(model)}
    return ModelServer.options(**opts).bind(cfg.model_dump(mode="json"), loader, resolver)


def app_builder(args: dict):
    """Entry point for Serve config files: args {config: PATH, set: [dotted=value, ...]}."""
    cfg = load_config(args["config"], list(args.get("set") or []))
    return build_app(cfg, model=args.get("model"))
