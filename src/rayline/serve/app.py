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

import numpy as np
import pyarrow as pa
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve
from starlette.requests import ClientDisconnect

from rayline.config import RaylineConfig, config_from_dict, load_config
from rayline.model.artifact import LoadedModel
from rayline.serve.auth import CHALLENGE, authorized, load_api_keys
from rayline.serve.monitor import WINDOW_S, DriftTracker, drift_report
from rayline.features.contract import shown
from rayline.serve.schema import RequestError, parse_body, parse_instances, request_schema, verdict_error

log = logging.getLogger("ray.serve")
VERSION_HEADER = "x-model-version"
CONFIG_ARG = "rayline_config"  # app_builder's argument holding the config by value
UNKNOWN_VERSION_TTL_S = 30.0
DRIFT_PUSH_S = 5.0

api = FastAPI(title="rayline", description="Predictions from a model in the rayline registry.",
              docs_url="/docs", openapi_url="/openapi.json")

Loader = Callable[[str], "tuple[int, LoadedModel]"]


def registry_hooks(cfg: RaylineConfig, device: str) -> tuple[Loader, Callable[[str], int], Callable[[int], dict]]:
    """(load a version onto `device`, resolve a reference, read a version's metadata), all over
    one Registry (its manifest cache is shared)."""
    from rayline.registry import Registry

    registry = Registry.of(cfg)

    def info(version: int) -> dict:
        mv = registry.get(version)
        return {"metrics": mv.metrics, "lineage": mv.lineage}
    return (lambda ref: registry.load(ref, device=device)), registry.resolve, info


def replica_device(gpus: float) -> str:
    """A replica that holds a GPU uses it; one without CUDA says so instead of idling it silently."""
    if gpus <= 0:
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda"
    log.warning(json.dumps({"event": "gpu_reserved_without_cuda", "gpus_per_replica": gpus,
                            "message": "serve.gpus_per_replica > 0 but torch sees no CUDA device: serving on CPU"}))
    return "cpu"


def json_content(content_type: str | None) -> bool:
    """application/json, optionally with a UTF-8 charset: nothing a browser form can send."""
    media, _, params = (content_type or "").partition(";")
    if media.strip().lower() != "application/json":
        return False
    charset = next((p.split("=", 1)[1].strip().strip('"').lower() for p in params.split(";") if "=" in p
                    and p.split("=", 1)[0].strip().lower() == "charset"), "utf-8")
    return charset in ("utf-8", "utf8")


# Everything the routes below call must be defined above them: @serve.ingress pickles the
# FastAPI app by value when the class is defined, with the module globals that exist then.
def _request_id(given: str | None) -> str:
    """The client's id if it is a sane token (it is echoed in headers and logs), else a new one."""
    if given and len(given) <= 64 and given.isascii() and all(c.isalnum() or c in "-_.:" for c in given):
        return given
    return uuid.uuid4().hex[:16]


@serve.deployment(name="ModelServer", max_ongoing_requests=128, health_check_period_s=10, health_check_timeout_s=30,
                  graceful_shutdown_wait_loop_s=1, graceful_shutdown_timeout_s=20)
@serve.ingress(api)
class ModelServer:
    def __init__(self, config: dict, loader: Loader | None = None, resolver: Callable[[str], int] | None = None,
                 info: Callable[[int], dict] | None = None):
        import torch

        self.cfg = config_from_dict(config)
        sc = self.cfg.serve
        self.api_keys = load_api_keys(sc.auth)  # configured but missing: the replica does not start
        self.device = replica_device(sc.gpus_per_replica)
        default_loader, default_resolver, default_info = registry_hooks(self.cfg, self.device)
        self.loader = loader or default_loader
        self.resolver = resolver or default_resolver
        self.info = info or default_info
        torch.set_num_threads(max(1, math.ceil(sc.cpus_per_replica)))
        self.ref, self.poll_s = self.cfg.alias, sc.model_poll_s
        self.current: tuple[int, LoadedModel] | None = None
        self.current_info: dict = {}
        self.pinned: OrderedDict[int, LoadedModel] = OrderedDict()
        self.unknown: dict[int, float] = {}               # version -> until when it is known not to exist
        self.loading: dict[int, asyncio.Future] = {}      # one load per version at a time
        self.drift: DriftTracker | None = None
        self._switch(self.ref)
        self._predict_batch.set_max_batch_size(sc.max_batch_size)
        self._predict_batch.set_batch_wait_timeout_s(sc.batch_wait_timeout_s)
        self._metrics()
        self._watcher: asyncio.Task | None = None
        self._pusher: asyncio.Task | None = None
        self._board_handle = None
        self._replica_id = str(os.getpid())
        self._ongoing = 0  # /predict requests on this replica now (body read, waiting or computing)

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
        """Load and warm the model `ref` points at, then swap it in (one reference assignment).
        Runs in a worker thread once serving (storage I/O never blocks the event loop)."""
        version = self.resolver(ref)
        if self.current is not None and self.current[0] == version:
            return
        v, model = self.loader(str(version))
        model.predict_inputs(model.spec.transform(model.contract.check_records([{}])[0]))  # warm-up allocates
        try:
            info = self.info(v)
        except Exception as e:  # noqa: BLE001 - metadata is best effort; the model serves without it
            log.warning(json.dumps({"event": "model_info_unavailable", "model_version": v, "error": str(e)[:200]}))
            info = {"metadata": "unavailable"}
        if self.drift is None or self.drift.spec != model.spec:
            self.drift = DriftTracker(model.spec)
        else:
            self.drift.spec = model.spec  # the same statistics: the per-batch check below is `is`
        self.current, self.current_info = (v, model), info
        log.info(json.dumps({"event": "model_loaded", "ref": ref, "model_version": v, "device": self.device}))

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
                log.warning(json.dumps({"event": "model_refresh_failed", "ref": self.ref, "error": str(e)[:200]}))

    def _ensure_watcher(self) -> None:
        """Start the background tasks on the first request (the event loop exists only then)."""
        if self._pusher is None:
            loop = asyncio.get_running_loop()
            self._pusher = loop.create_task(self._push_drift_forever())
            if self.poll_s > 0:
                self._watcher = loop.create_task(self._watch())

    # ------------------------------------------------------------------ drift across replicas
    async def _board(self):
        if self._board_handle is None:
            from ray import get_runtime_context

            from rayline.serve.monitor import board_actor

            self._replica_id = get_runtime_context().get_actor_id() or str(os.getpid())
            name = f"rayline-drift-{self.cfg.serve.app_name}"
            self._board_handle = await asyncio.get_running_loop().run_in_executor(None, board_actor, name)
        return self._board_handle

    async def _push_drift(self) -> None:
        if self.current is not None and self.drift is not None:
            board = await self._board()
            await board.push.remote(self._replica_id, self.current[0], self.drift.snapshot())

    async def _push_drift_forever(self) -> None:
        pushed = -1
        while True:
            await asyncio.sleep(DRIFT_PUSH_S)
            try:
                if self.drift is not None and self.drift.n != pushed:
                    pushed = self.drift.n
                    await self._push_drift()
            except Exception as e:  # noqa: BLE001 - drift is advisory; serving goes on
                log.warning(json.dumps({"event": "drift_push_failed", "error": str(e)[:200]}))

    async def _pinned_model(self, version: int) -> LoadedModel:
        """A pinned version: loaded in a worker thread, once, with unknown versions remembered."""
        if self.current and self.current[0] == version:
            return self.current[1]
        if version in self.pinned:
            self.pinned.move_to_end(version)
            return self.pinned[version]
        now = time.monotonic()
        if self.unknown.get(version, 0.0) > now:
            raise RequestError(404, "unknown_version", f"model version {version} does not exist")
        if version not in self.loading:
            self.loading[version] = asyncio.get_running_loop().run_in_executor(None, self.loader, str(version))
        try:
            _, model = await asyncio.shield(self.loading[version])
        except Exception:  # noqa: BLE001 - an unknown version is the client's problem
            if len(self.unknown) > 1024:
                self.unknown = {v: t for v, t in self.unknown.items() if t > now}
            self.unknown[version] = now + UNKNOWN_VERSION_TTL_S
            raise RequestError(404, "unknown_version", f"model version {version} does not exist") from None
        finally:
            self.loading.pop(version, None)
        self.pinned[version] = model
        while len(self.pinned) > 2:
            self.pinned.popitem(last=False)
        return model

    def check_health(self) -> None:
        if self.current is None:
            raise RuntimeError("no model loaded")

    def _denied(self, request: Request) -> JSONResponse | None:
        if authorized(request.headers.get("authorization"), self.api_keys):
            return None
        self.m_invalid.inc(tags={"reason": "unauthorized"})
        return JSONResponse({"error": "unauthorized", "message": "missing or invalid API key: send the header "
                             "'Authorization: Bearer <key>'"}, 401, headers=CHALLENGE)

    # ------------------------------------------------------------------ prediction
    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.005)
    async def _predict_batch(self, items: list[tuple[int, LoadedModel, list[dict], bool]]) -> list:
        return self._predict_items(items)

    def _predict_items(self, items: list[tuple[int, LoadedModel, list[dict], bool]]) -> list:
        """Many concurrent requests -> one contract check, one transform and one forward pass
        per model version.

        Verdicts are per row, so each request is answered by its own rows alone: one request's
        invalid or oddly typed values give it a 4xx and change nothing for the others (the
        checked columns have one schema whatever was sent). If the batched step still fails,
        each request is retried alone and only the one that breaks fails.
        """
        out: list[Any] = [None] * len(items)
        groups: dict[int, list[int]] = {}
        for i, (v, _, _, _) in enumerate(items):
            groups.setdefault(v, []).append(i)
        for v, idx in groups.items():
            try:
                self._predict_group(v, items, idx, out)
            except Exception:  # noqa: BLE001 - isolate the culprit
                for i in idx:
                    try:
                        self._predict_group(v, items, [i], out)
                    except Exception as e:  # noqa: BLE001
                        out[i] = e
        return out

    def _predict_group(self, v: int, items: list, idx: list[int], out: list) -> None:
        model = items[idx[0]][1]
        records = [r for i in idx for r in items[i][2]]
        table, failures = model.contract.check_records(records)
        keep, start, answered = [], 0, []
        for i in idx:
            n, batched = len(items[i][2]), items[i][3]
            error = verdict_error(model.contract, failures, start, n, batched)
            if error is None:
                keep.append(np.arange(start, start + n))
                answered.append(i)
            else:
                out[i] = error
            start += n
        if not answered:
            return
        rows = np.concatenate(keep)
        table = table if len(rows) == table.num_rows else table.take(pa.array(rows))
        inputs = model.spec.transform(table)
        preds = model.predict_inputs(inputs)
        if not np.isfinite(preds).all():
            raise ValueError("the model produced a non-finite prediction")
        if self.drift is not None and model.spec is self.drift.spec:
            for name in self.drift.observe(table, inputs):
                self.m_outside.inc(tags={"feature": name})
        self.m_predictions.inc(len(table), tags={"model_version": str(v)})
        scores = preds.max(axis=1) if preds.ndim == 2 else preds
        for score in scores.tolist():
            self.m_score.observe(score, tags={"model_version": str(v)})
        start = 0
        for i in answered:
            n = len(items[i][2])
            out[i] = (self._format(model, preds[start:start + n]), v)
            start += n

    def _format(self, model: LoadedModel, preds) -> list:
        task, labels = model.spec.label.task, model.labels(preds)  # at the model's own threshold
        if task == "binary":
            return [{"probability": float(p), "label": int(y)} for p, y in zip(preds, labels)]
        if task == "multiclass":
            classes = model.spec.label.classes or []
            return [{"probabilities": dict(zip(classes, map(float, p))), "label": y} for p, y in zip(preds, labels)]
        return [{"value": float(p)} for p in preds]

    async def _read_body(self, request: Request) -> bytes:
        """The body, counted as it arrives (chunked too) and within a deadline: a client cannot
        make the replica buffer more than the limit or hold a request slot open for long."""
        sc = self.cfg.serve
        limit = sc.max_body_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and len(declared) < 20 and int(declared) > limit:
            raise RequestError(413, "too_large", f"request body is {int(declared):,} bytes; the limit is {limit:,}")
        chunks: list[bytes] = []

        async def read() -> None:
            size = 0
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise RequestError(413, "too_large", f"request body is over the limit of {limit:,} bytes")
                chunks.append(chunk)
        try:
            await asyncio.wait_for(read(), sc.body_timeout_s)
        except asyncio.TimeoutError:
            raise RequestError(408, "body_timeout", f"the request body did not arrive within {sc.body_timeout_s:g}s") from None
        except ClientDisconnect:
            raise RequestError(400, "client_disconnected", "the client went away before sending the whole body") from None
        return b"".join(chunks)

    @api.post("/predict", openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"oneOf": [{"type": "object", "description": "one record"},
                             {"type": "object", "properties": {"instances": {"type": "array"}}}]}}}}})
    async def predict(self, request: Request) -> JSONResponse:
        self._ensure_watcher()
        if denied := self._denied(request):
            return denied
        rid = _request_id(request.headers.get("x-request-id"))
        self._ongoing += 1
        try:
            # The replica's own deadline: the proxy's can be lifted by a client header.
            return await asyncio.wait_for(self._predict(request, rid), self.cfg.serve.request_timeout_s)
        except RequestError as e:
            self.m_invalid.inc(tags={"reason": e.reason})
            body = {"error": e.reason, "message": e.message, "request_id": rid}
            if e.details:
                body["errors"] = e.details
            return JSONResponse(body, e.status)
        except asyncio.TimeoutError:
            return JSONResponse({"error": "timeout", "message": f"not answered within {self.cfg.serve.request_timeout_s:g}s",
                                 "request_id": rid}, 503)
        finally:
            self._ongoing -= 1

    async def _predict(self, request: Request, rid: str) -> JSONResponse:
        if self.current is None:
            return JSONResponse({"error": "not_ready", "message": "no model loaded yet", "request_id": rid}, 503)
        if not json_content(request.headers.get("content-type")):
            raise RequestError(415, "unsupported_media_type", "send the body as JSON with the header "
                               "'Content-Type: application/json' (UTF-8)")
        body = await self._read_body(request)
        pin = request.headers.get(VERSION_HEADER)
        if pin is not None:
            if not (pin.isascii() and pin.isdigit() and len(pin) <= 9):
                raise RequestError(400, "bad_version", f"header {VERSION_HEADER} must be a version number, got {shown(pin, 40)!r}")
            v, model = int(pin), await self._pinned_model(int(pin))
        else:
            v, model = self.current
        records, batched = parse_instances(parse_body(body, self.cfg.serve.max_body_bytes), model.contract.kinds,
                                           self.cfg.serve.max_instances_per_request)
        item = (v, model, records, batched)
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
        return JSONResponse({"predictions": preds, "model_version": version, "request_id": rid},
                            headers={"x-model-version": str(version)})  # the proxy sets x-request-id

    @api.get("/model")
    async def model_info(self, request: Request):
        self._ensure_watcher()
        if denied := self._denied(request):
            return denied
        v, model = self.current
        return {"model_version": v, "following": self.ref, "task": model.spec.label.task, "device": self.device,
                "request_schema": request_schema(model.spec), **self.current_info}

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
        self._ensure_watcher()
        if self.current is None or self.drift is None:
            return JSONResponse({"error": "not_ready", "message": "no model loaded yet"}, 503)
        v, local = self.current[0], self.drift.snapshot()
        snapshots, note = [local], None
        try:  # every replica's counts, not only the one this request reached
            await asyncio.wait_for(self._push_drift(), 5)
            board = await self._board()
            snapshots = await asyncio.wait_for(board.collect.remote(v, WINDOW_S), 5) or [local]
        except Exception as e:  # noqa: BLE001 - fall back to this replica's own counts
            note = f"other replicas' counts unavailable ({type(e).__name__}); this replica only"
        report = drift_report(self.drift.spec, snapshots, time.time() - WINDOW_S)
        return {"replica": os.getpid(), "model_version": v, "observed_records": local["records"],
                "observed_batches": local["batches"], **report, **({"note": note} if note else {})}


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
        "user_config": {"model": cfg.alias, "poll_s": sc.model_poll_s},
    }


def build_app(cfg: RaylineConfig, loader: Loader | None = None, resolver=None, model: str | None = None):
    opts = deployment_options(cfg)
    if model is not None:
        opts["user_config"] = {**opts["user_config"], "model": str(model)}
    return ModelServer.options(**opts).bind(cfg.model_dump(mode="json"), loader, resolver, None)


def app_builder(args: dict):
    """Entry point for Serve config files. args: {rayline_config: {...}} (the config by value, as
    `rayline serve-config` writes it), or {config: PATH, set: [dotted=value, ...]} for a config
    file present on every node."""
    if CONFIG_ARG in args:
        cfg = config_from_dict(args[CONFIG_ARG])
    else:
        cfg = load_config(args["config"], list(args.get("set") or []))
    return build_app(cfg, model=args.get("model"))
