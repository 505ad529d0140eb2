"""The model a replica serves, and how it changes: load and warm a new version before swapping it
in (one reference assignment, so a rollout never fails a request), keep up to two versions
pinned by clients (`x-model-version`), and remember versions that do not exist for a while so
a client cannot make the replica hit storage on every request."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from typing import Callable

from rayline.model.artifact import LoadedModel
from rayline.serve.monitor import DriftTracker
from rayline.serve.schema import RequestError

log = logging.getLogger("ray.serve")
UNKNOWN_VERSION_TTL_S = 30.0
PINNED_KEPT = 2

Loader = Callable[[str], "tuple[int, LoadedModel]"]


def registry_hooks(storage_root: str, name: str, device: str) -> tuple[Loader, Callable[[str], int], Callable[[int], dict]]:
    """(load a version onto `device` with its lookups, resolve a reference, read a version's
    metadata), all over one Registry (its manifest cache is shared)."""
    from rayline.data.lookup_store import snapshot_of
    from rayline.registry import Registry
    from rayline.storage import Storage

    registry = Registry(Storage(storage_root), name)

    def info(version: int) -> dict:
        mv = registry.get(version)
        return {"metrics": mv.metrics, "lineage": public_lineage(mv.lineage)}

    def load(ref: str):  # the model, and the lookup snapshot its features come through
        v, model = registry.load(ref, device=device)
        model.lookups = snapshot_of(registry, v, model.spec)
        return v, model
    return load, registry.resolve, info


def public_lineage(lineage: dict) -> dict:
    """A version's lineage as GET /model shows it to any client: ids, hashes and packages, but no
    storage locations (absolute paths, bucket URIs, the MLflow store's path)."""
    out = {k: v for k, v in lineage.items() if not k.endswith("_uri")}
    if isinstance(out.get("tracking"), dict):
        out["tracking"] = {k: v for k, v in out["tracking"].items() if k != "uri"}
    return out


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


class ModelHolder:
    def __init__(self, loader: Loader, resolver: Callable[[str], int], info: Callable[[int], dict], device: str = "cpu"):
        self.loader, self.resolver, self.info, self.device = loader, resolver, info, device
        self.current: tuple[int, LoadedModel] | None = None
        self.current_info: dict = {}
        self.drift: DriftTracker | None = None
        self.pinned: OrderedDict[int, LoadedModel] = OrderedDict()
        self.unknown: dict[int, float] = {}               # version -> until when it is known not to exist
        self.loading: dict[int, asyncio.Future] = {}      # one load per version at a time

    def switch(self, ref: str) -> None:
        """Load and warm the model `ref` points at, then swap it in. Blocking (storage I/O): a
        serving replica calls it in a worker thread, never on the event loop."""
        version = self.resolver(ref)
        if self.current is not None and self.current[0] == version:
            return
        v, model = self.loader(str(version))
        model.predict_table(model.contract.check_records([{}])[0])  # warm-up allocates
        try:
            info = self.info(v)
        except Exception as e:  # noqa: BLE001 - metadata is best effort; the model serves without it
            log.warning(json.dumps({"event": "model_info_unavailable", "model_version": v, "error": str(e)[:200]}))
            info = {"metadata": "unavailable"}
        if self.drift is None or self.drift.spec != model.spec:
            self.drift = DriftTracker(model.spec)
        else:
            self.drift.spec = model.spec  # the same statistics: the per-batch check is `is`
        self.current, self.current_info = (v, model), info
        log.info(json.dumps({"event": "model_loaded", "ref": ref, "model_version": v, "device": self.device}))

    async def version(self, version: int) -> LoadedModel:
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
        while len(self.pinned) > PINNED_KEPT:
            self.pinned.popitem(last=False)
        return model
