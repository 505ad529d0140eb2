"""The models a replica serves, and how they change: the traffic split's arms and the shadow
(`traffic.Routes`), each version loaded and warmed before the routes that use it are swapped in
(one reference assignment, so a rollout or a weight change never fails a request); versions
pinned by clients (`x-model-version`) share a bounded LRU with them; versions that do not exist
are remembered for a while so a client cannot make the replica hit storage on every request."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from typing import Callable

from rayline.model.artifact import LoadedModel
from rayline.serve.monitor import DriftTracker
from rayline.serve.options import REPLICA_LOG
from rayline.serve.schema import RequestError
from rayline.serve.traffic import Arm, Routes

log = logging.getLogger(REPLICA_LOG)
UNKNOWN_VERSION_TTL_S = 30.0

Loader = Callable[[str], "tuple[int, LoadedModel]"]


def registry_hooks(storage_root: str, name: str, device: str, follow: str = "model"):
    """(load a version onto `device` with its own lookup snapshot, resolve a reference, read a
    version's metadata, refresh: the version's model on the newest compatible snapshot if that is
    another one and `follow` is "newest", else None), all over one Registry (its manifest cache
    is shared)."""
    import dataclasses

    from rayline.data.lookup_store import newest_compatible, read_snapshot, snapshot_of
    from rayline.registry import Registry
    from rayline.storage import Storage

    registry = Registry(Storage(storage_root), name)
    loaded_snapshots: dict[str, object] = {}  # id -> Lookups: versions on one snapshot share its index

    def info(version: int) -> dict:
        mv = registry.get(version)
        return {"metrics": mv.metrics, "lineage": public_lineage(mv.lineage)}

    own_snapshots: dict[str, object] = {}  # id -> Lookups: versions evaluated on one snapshot share it in memory

    def load(ref: str):  # the model, and the lookup snapshot it was evaluated with (none when "none")
        v, model = registry.load(ref, device=device)
        sid = (registry.get(v).lineage.get("lookups") or {}).get("snapshot")
        if follow != "none" and sid in own_snapshots:
            model.lookups = own_snapshots[sid]
        else:
            model.lookups = snapshot_of(registry, v, model.spec, "none" if follow == "none" else "model")
            if model.lookups is not None:
                while len(own_snapshots) >= 4:  # a few: the versions a replica holds at once
                    own_snapshots.pop(next(iter(own_snapshots)))
                own_snapshots[model.lookups.snapshot] = model.lookups
        return v, model

    def refresh(version: int, model: LoadedModel) -> LoadedModel | None:
        if follow != "newest" or model.lookups is None:
            return None
        lineage = registry.get(version).lineage
        own = lineage.get("lookups") or {}
        newest = newest_compatible(registry.storage, name, lineage["ingest_key"], own) or own
        if newest.get("snapshot") == model.lookups.snapshot:
            return None
        lookups = loaded_snapshots.get(newest["snapshot"])
        if lookups is None:
            lookups = read_snapshot(registry.storage, name, lineage["ingest_key"], newest, model.spec.joins,
                                    model.spec.counts)
            loaded_snapshots.clear()  # keep the newest only: older ones go with the models that hold them
            loaded_snapshots[newest["snapshot"]] = lookups
        return dataclasses.replace(model, lookups=lookups)  # a new object: in-flight requests keep theirs
    return load, registry.resolve, info, refresh


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
    """The versions a replica serves: the traffic split's arms and the shadow (aliases resolved to
    versions), plus versions clients pin, in one bounded LRU. A change of the split loads and warms
    every new version first, then swaps the routes in one assignment."""

    def __init__(self, loader: Loader, resolver: Callable[[str], int], info: Callable[[int], dict], device: str = "cpu",
                 max_versions: int = 4, refresh: Callable[[int, LoadedModel], LoadedModel | None] | None = None):
        """`refresh(version, model)`: the model on another lookup snapshot when one should replace
        its current one (serve.lookup_snapshot: newest), else None."""
        self.loader, self.resolver, self.info, self.device = loader, resolver, info, device
        self.refresh = refresh
        self.max_versions = max_versions
        self.models: OrderedDict[int, LoadedModel] = OrderedDict()  # least recently used first
        self.infos: dict[int, dict] = {}
        self.routes: Routes | None = None
        self.drift: DriftTracker | None = None
        self.unknown: dict[int, float] = {}               # version -> until when it is known not to exist
        self.loading: dict[int, asyncio.Future] = {}      # one load per version at a time

    @property
    def current(self) -> tuple[int, LoadedModel] | None:
        """The primary arm's version and model (what /model describes and /drift compares with)."""
        if self.routes is None:
            return None
        v = self.routes.primary.version
        return v, self.routes.loaded[v]

    @property
    def current_info(self) -> dict:
        return self.infos.get(self.routes.primary.version, {}) if self.routes else {}

    @property
    def pinned(self) -> list[int]:
        """Versions held for clients' pins only (not an arm, not the shadow)."""
        used = self.routes.versions() if self.routes else set()
        return [v for v in self.models if v not in used]

    def switch(self, ref: str) -> None:
        """Serve `ref` alone (no split, no shadow)."""
        self.follow([(ref, 1.0)], None)

    def follow(self, arms: list[tuple[str, float]], shadow: tuple[str, float] | None) -> None:
        """Resolve the arms' and the shadow's references, load and warm what is new, then swap.
        Blocking (storage I/O): a serving replica calls it in a worker thread, never on the event loop.
        A reference that does not resolve raises (RegistryError) and changes nothing."""
        resolved = [Arm(ref, w, self.resolver(ref)) for ref, w in arms]
        shadow_arm = Arm(shadow[0], shadow[1], self.resolver(shadow[0])) if shadow else None
        routes = Routes(tuple(resolved), shadow_arm)
        same, fresh = routes == self.routes, False
        for v in sorted(routes.versions(), key=lambda v: v != routes.primary.version):
            model = self.routes.loaded[v] if same else self._ensure(v)
            newer = self.refresh(v, model) if self.refresh is not None else None
            if newer is not None:  # a new lookup snapshot: the same model, other lookups
                newer.predict_table(newer.contract.check_records([{}])[0])
                self.models[v], model, fresh = newer, newer, True
                log.info(json.dumps({"event": "lookup_snapshot", "model_version": v, "snapshot": newer.lookups.snapshot}))
            routes.loaded[v] = model
        if same and not fresh:
            return
        primary = self.models[routes.primary.version]
        if self.drift is None or self.drift.spec != primary.spec:
            self.drift = DriftTracker(primary.spec)
        else:
            self.drift.spec = primary.spec  # the same statistics: the per-batch check is `is`
        before, self.routes = self.routes, routes
        self._evict()
        if before is None or before.describe() != routes.describe():
            log.info(json.dumps({"event": "routes", **routes.describe(), "device": self.device}))

    def _ensure(self, version: int) -> LoadedModel:
        if version in self.models:
            self.models.move_to_end(version)
            return self.models[version]
        v, model = self.loader(str(version))
        model.predict_table(model.contract.check_records([{}])[0])  # warm-up allocates
        try:
            self.infos[v] = self.info(v)
        except Exception as e:  # noqa: BLE001 - metadata is best effort; the model serves without it
            log.warning(json.dumps({"event": "model_info_unavailable", "model_version": v, "error": str(e)[:200]}))
            self.infos[v] = {"metadata": "unavailable"}
        self.models[v] = model
        log.info(json.dumps({"event": "model_loaded", "model_version": v, "device": self.device,
                             "bytes": model.nbytes}))
        return model

    def _evict(self) -> None:
        """Beyond max_versions, drop the least recently used version no route needs."""
        used = self.routes.versions() if self.routes else set()
        for v in list(self.models):
            if len(self.models) <= max(self.max_versions, len(used)):
                break
            if v not in used:
                del self.models[v]
                self.infos.pop(v, None)

    def memory(self) -> dict:
        """Bytes per loaded version (parameters or trees) and per lookup snapshot (shared by the
        versions evaluated on it)."""
        snapshots = {m.lookups.snapshot: m.lookups.nbytes for m in self.models.values() if m.lookups is not None}
        return {"versions": {str(v): m.nbytes for v, m in self.models.items()}, "lookup_snapshots": snapshots}

    async def version(self, version: int) -> LoadedModel:
        """A pinned version: loaded in a worker thread, once, with unknown versions remembered."""
        if version in self.models:
            self.models.move_to_end(version)
            return self.models[version]
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
        self.models[version] = model
        self._evict()
        return model
