"""Versioned models with lineage, and aliases, under `<root>/models/<name>/`.

Layout:
    models/<name>/<version>/    weights.pt feature_spec.json model_config.json config.json
                                metrics.json lineage.json history.json report/ _SUCCESS
    models/<name>/claims/<version>      one file per allocated version number
    models/<name>/aliases/<alias>.json  {"version": N, "history": [...]}

Writers stage a version under a temporary name, claim the next number with an exclusive
create (two concurrent writers can never get the same number) and publish by rename; a
version without `_SUCCESS` is invisible, so a half-written version is never read.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from rayline.errors import RegistryError
from rayline.model.artifact import MODEL_CONFIG, SPEC, WEIGHTS, LoadedModel
from rayline.storage import Storage


@dataclass
class ModelVersion:
    name: str
    version: int
    uri: str
    metrics: dict
    lineage: dict

    def summary(self) -> dict:
        test = self.metrics.get("test", {})
        return {"name": self.name, "version": self.version, "uri": self.uri, "metric": self.metrics.get("metric"),
                "test": {k: test.get(k) for k in ("auc", "log_loss", "accuracy", "rmse", "r2", "rows") if k in test},
                "run_name": self.lineage.get("run_name"), "created_unix": self.lineage.get("created_unix")}


class Registry:
    def __init__(self, storage: Storage, name: str):
        self.storage, self.name = storage, name
        self.base = f"models/{name}"

    # ------------------------------------------------------------------ writing
    def register(self, files: dict[str, bytes], metrics: dict, lineage: dict) -> ModelVersion:
        s = self.storage
        s.clean_stale(self.base)
        tmp = s.temp_dir(self.base, "version")
        for rel, data in files.items():
            s.write_bytes(data, tmp, rel)
        lineage = {**lineage, "created_unix": time.time()}
        s.write_json(metrics, tmp, "metrics.json")
        version = self._claim_next()
        lineage["version"] = version
        s.write_json(lineage, tmp, "lineage.json")
        s.publish(tmp, f"{self.base}/{version}")
        return self.get(version)

    def _claim_next(self) -> int:
        existing = [int(n) for n in self.storage.list_dir(self.base, "claims") if n.isdigit()]
        n = max(existing, default=0) + 1
        while not self.storage.create_exclusive(str(time.time()).encode(), self.base, "claims", str(n)):
            n += 1
        return n

    # ------------------------------------------------------------------ reading
    def versions(self) -> list[int]:
        names = [n for n in self.storage.list_dir(self.base) if n.isdigit()]
        return sorted(int(n) for n in names if self.storage.is_complete(self.base, n))

    def get(self, version: int) -> ModelVersion:
        if not self.storage.is_complete(self.base, str(version)):
            raise RegistryError(f"model {self.name!r} has no version {version} (versions: {self.versions() or 'none'})")
        rel = f"{self.base}/{version}"
        return ModelVersion(self.name, version, self.storage.uri(rel), self.storage.read_json(rel, "metrics.json"),
                            self.storage.read_json(rel, "lineage.json"))

    def read_file(self, version: int, rel: str) -> bytes:
        return self.storage.read_bytes(self.base, str(version), rel)

    def resolve(self, ref: str | int | None) -> int:
        """A version number, an alias name, or 'latest'."""
        if ref is None or ref == "latest":
            vs = self.versions()
            if not vs:
                raise RegistryError(f"model {self.name!r} has no versions under {self.storage.uri(self.base)}: train one first")
            return vs[-1]
        if isinstance(ref, int) or str(ref).isdigit():
            v = int(ref)
            self.get(v)
            return v
        aliases = self.aliases()
        if ref not in aliases:
            raise RegistryError(f"model {self.name!r} has no alias {ref!r} (aliases: {sorted(aliases) or 'none'})")
        return aliases[ref]

    def load(self, ref: str | int | None, device: str = "cpu") -> tuple[int, LoadedModel]:
        v = self.resolve(ref)
        model = LoadedModel.from_bytes(self.read_file(v, WEIGHTS), self.read_file(v, SPEC),
                                       self.read_file(v, MODEL_CONFIG), device=device)
        return v, model

    def find_run(self, run_name: str) -> ModelVersion | None:
        for v in reversed(self.versions()):
            mv = self.get(v)
            if mv.lineage.get("run_name") == run_name:
                return mv
        return None

    # ------------------------------------------------------------------ aliases
    def aliases(self) -> dict[str, int]:
        out = {}
        for n in self.storage.list_dir(self.base, "aliases"):
            if n.endswith(".json") and not n.startswith("."):
                out[n[:-5]] = self.storage.read_json(self.base, "aliases", n)["version"]
        return out

    def alias_history(self, alias: str) -> list[int]:
        if not self.storage.exists(self.base, "aliases", f"{alias}.json"):
            return []
        return self.storage.read_json(self.base, "aliases", f"{alias}.json").get("history", [])

    def set_alias(self, alias: str, version: int) -> None:
        """Point `alias` at `version` (one atomic file write), remembering where it pointed before."""
        self.get(version)
        history = self.alias_history(alias)
        current = self.aliases().get(alias)
        if current is not None and current != version:
            history = (history + [current])[-50:]
        self.storage.write_json({"version": version, "history": history, "updated_unix": time.time()},
                                self.base, "aliases", f"{alias}.json")

    def rollback(self, alias: str) -> int:
        history = self.alias_history(alias)
        if not history:
            raise RegistryError(f"alias {alias!r} of {self.name!r} has no earlier version to roll back to")
        previous = history[-1]
        self.get(previous)
        self.storage.write_json({"version": previous, "history": history[:-1], "updated_unix": time.time()},
                                self.base, "aliases", f"{alias}.json")
        return previous


def metric_of(mv: ModelVersion) -> tuple[str, str, float]:
    m = mv.metrics
    return m["metric"], m["mode"], m["test"][m["metric"]]


def json_bytes(obj) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode()
