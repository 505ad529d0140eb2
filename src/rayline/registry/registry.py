"""Versioned models with lineage, and aliases, under `<root>/models/<name>/`.

Layout:
    models/<name>/<version>/    weights.pt feature_spec.json model_config.json config.yaml
                                metrics.json lineage.json history.json evaluation.json
                                manifest.json (SHA-256 of every file above) report/ _SUCCESS
    models/<name>/claims/<version>            one file per allocated version number
    models/<name>/aliases/<alias>/<seq>.json  one entry per change of the alias, never rewritten

Every concurrent write rests on one primitive, `Storage.create_exclusive` (O_EXCL locally, a
conditional PUT on S3):
- a version number is claimed by creating `claims/<n>`: two writers never share a number, so two
  registrations never publish into the same directory;
- an alias changes by creating entry `seq + 1` of its log, where `seq` is the entry the writer
  read: a compare-and-swap. A writer that loses the race re-reads and decides again (the
  promotion gate re-runs against the version that really holds the alias). Nothing is lost: the
  log is the alias's whole history.

A version is visible once `_SUCCESS` exists (written last), and its files are checked against
`manifest.json` when read: a truncated, swapped or half-copied file is an error naming the file.
The `report/` folder is documentation that `rayline evaluate` may regenerate, so it is outside
the manifest.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass, field

from rayline import layout
from rayline.config import RaylineConfig
from rayline.errors import RegistryError
from rayline.model.artifact import MODEL_CONFIG, SPEC, LoadedModel, model_file
from rayline.storage import Storage

MANIFEST = "manifest.json"
ALIAS_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# Staging and unmarked versions younger than this belong to a writer that may still be running.
STALE_AFTER_S = 6 * 3600


class AliasConflict(RegistryError):
    """Another writer changed the alias between our read and our write."""


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


@dataclass(frozen=True)
class AliasState:
    """An alias as one reader saw it: `seq` is the log entry read (0: never set)."""

    alias: str
    seq: int
    version: int | None
    history: list[int] = field(default_factory=list)  # earlier versions, most recent last (rollback)


class Registry:
    @classmethod
    def of(cls, cfg: RaylineConfig, storage: Storage | None = None) -> "Registry":
        """The config's model registry, on `storage` or else on the config's storage root."""
        return cls(storage if storage is not None else Storage(cfg.storage.root), cfg.name)

    def __init__(self, storage: Storage, name: str, stale_after_s: float = STALE_AFTER_S):
        self.storage, self.name = storage, name
        self.base = layout.models(name)
        self.stale_after_s = stale_after_s
        self._manifests: dict[int, dict | None] = {}  # published versions never change

    # ------------------------------------------------------------------ writing
    def register(self, files: dict[str, bytes], metrics: dict, lineage: dict) -> ModelVersion:
        s = self.storage
        self.sweep()
        tmp = s.temp_dir(self.base, "version")
        try:
            for rel, data in files.items():
                s.write_bytes(data, tmp, rel)
            version = self._claim_next()
            meta = {"metrics.json": json_bytes(metrics),
                    "lineage.json": json_bytes({**lineage, "created_unix": time.time(), "version": version})}
            for rel, data in meta.items():
                s.write_bytes(data, tmp, rel)
            s.write_bytes(json_bytes(manifest_of({**files, **meta})), tmp, MANIFEST)
            s.publish(tmp, f"{self.base}/{version}")
        except BaseException:
            s.delete_dir(tmp)
            raise
        self.verify(version)  # on object stores publish is a copy: check what readers will see
        return self.get(version)

    def _claim_next(self) -> int:
        existing = [int(n) for n in self.storage.list_dir(self.base, "claims") if n.isdigit()]
        n = max(existing, default=0) + 1
        while not self.storage.create_exclusive(str(time.time()).encode(), self.base, "claims", str(n)):
            n += 1
        return n

    def sweep(self) -> list[str]:
        """Remove what crashed writers left: old staging, and claimed versions never completed
        (a crash part-way through a copy-publish on an object store). Returns what was removed."""
        s, removed = self.storage, []
        s.clean_stale(self.base, older_than_s=self.stale_after_s)
        for n in s.list_dir(self.base):
            if not n.isdigit() or s.is_complete(self.base, n):
                continue
            try:
                claimed = float(s.read_bytes(self.base, "claims", n) or 0)
            except (OSError, ValueError):
                claimed = 0.0
            if time.time() - claimed > self.stale_after_s:
                s.delete_dir(self.base, n)
                removed.append(n)
        return removed

    # ------------------------------------------------------------------ reading
    def versions(self) -> list[int]:
        names = [n for n in self.storage.list_dir(self.base) if n.isdigit()]
        return sorted(int(n) for n in names if self.storage.is_complete(self.base, n))

    def get(self, version: int) -> ModelVersion:
        if not self.storage.is_complete(self.base, str(version)):
            raise RegistryError(f"model {self.name!r} has no version {version} (versions: {self.versions() or 'none'})")
        rel = f"{self.base}/{version}"
        return ModelVersion(self.name, version, self.storage.uri(rel), json.loads(self.read_file(version, "metrics.json")),
                            json.loads(self.read_file(version, "lineage.json")))

    def read_file(self, version: int, rel: str) -> bytes:
        """A file of a published version, checked against the version's manifest."""
        data = self.storage.read_bytes(self.base, str(version), rel)
        manifest = self._manifest(version)
        if manifest is not None and rel in manifest:
            _check(self.name, version, rel, data, manifest[rel])
        return data

    def verify(self, version: int) -> None:
        """Every file of the manifest is present with its checksum (RegistryError naming the file)."""
        manifest = self._manifest(version)
        if manifest is None:
            raise RegistryError(f"model {self.name!r} version {version} has no {MANIFEST}: it cannot be verified")
        for rel, entry in manifest.items():
            if not self.storage.exists(self.base, str(version), rel):
                raise RegistryError(f"model {self.name!r} version {version}: file {rel} listed in {MANIFEST} is missing")
            _check(self.name, version, rel, self.storage.read_bytes(self.base, str(version), rel), entry)

    def _manifest(self, version: int) -> dict | None:
        """The version's file checksums; None for versions registered before manifests existed."""
        if version not in self._manifests:
            if self.storage.exists(self.base, str(version), MANIFEST):
                self._manifests[version] = self.storage.read_json(self.base, str(version), MANIFEST)["files"]
            else:
                return None  # not cached: a version being published may gain its manifest
        return self._manifests[version]

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
        state = self.alias_state(str(ref))
        if state.version is None:
            raise RegistryError(f"model {self.name!r} has no alias {ref!r} (aliases: {sorted(self.aliases()) or 'none'})")
        return state.version

    def load(self, ref: str | int | None, device: str = "cpu") -> tuple[int, LoadedModel]:
        v = self.resolve(ref)
        config = self.read_file(v, MODEL_CONFIG)
        model = LoadedModel.from_bytes(self.read_file(v, model_file(config)), self.read_file(v, SPEC), config,
                                       device=device)
        return v, model

    def find_run(self, run_name: str) -> ModelVersion | None:
        for v in reversed(self.versions()):
            mv = self.get(v)
            if mv.lineage.get("run_name") == run_name:
                return mv
        return None

    # ------------------------------------------------------------------ aliases
    def aliases(self) -> dict[str, int]:
        names = {n[:-5] if n.endswith(".json") else n for n in self.storage.list_dir(self.base, "aliases")
                 if not n.startswith(".")}
        states = (self.alias_state(n) for n in sorted(names) if ALIAS_NAME.match(n))
        return {st.alias: st.version for st in states if st.version is not None}

    def alias_state(self, alias: str) -> AliasState:
        _check_alias(alias)
        log = self._alias_seqs(alias)
        if log:
            entry = self.storage.read_json(self.base, "aliases", alias, _entry_name(log[-1]))
            return AliasState(alias, log[-1], entry["version"], list(entry.get("history", [])))
        if self.storage.exists(self.base, "aliases", f"{alias}.json"):  # layout before the log
            old = self.storage.read_json(self.base, "aliases", f"{alias}.json")
            return AliasState(alias, 0, old["version"], list(old.get("history", [])))
        return AliasState(alias, 0, None, [])

    def alias_log(self, alias: str) -> list[dict]:
        """Every change of the alias, oldest first: version, previous, event, forced, time, ..."""
        _check_alias(alias)
        return [self.storage.read_json(self.base, "aliases", alias, _entry_name(n)) for n in self._alias_seqs(alias)]

    def alias_history(self, alias: str) -> list[int]:
        return self.alias_state(alias).history

    def change_alias(self, state: AliasState, version: int, event: str, **details) -> AliasState:
        """Compare-and-swap: point the alias at `version` if it is still as `state` saw it.

        Raises AliasConflict when another writer changed it first: re-read and decide again.
        """
        self.get(version)
        if event == "rollback":
            history = state.history[:-1]
        elif state.version is not None and state.version != version:
            history = (state.history + [state.version])[-50:]
        else:
            history = state.history
        seq = state.seq + 1
        entry = {"version": version, "previous": state.version, "history": history, "event": event, "seq": seq,
                 "updated_unix": time.time(), **details}
        if not self.storage.create_exclusive(json_bytes(entry), self.base, "aliases", state.alias, _entry_name(seq)):
            raise AliasConflict(f"alias {state.alias!r} of {self.name!r} was changed by another writer "
                                f"(it was at change {state.seq})")
        return AliasState(state.alias, seq, version, history)

    def set_alias(self, alias: str, version: int, event: str = "set", attempts: int = 50, **details) -> None:
        """Point `alias` at `version` whatever it points at now (no gate), remembering the old one."""
        self._retry(alias, lambda st: self.change_alias(st, version, event, **details), attempts)

    def rollback(self, alias: str, attempts: int = 50) -> int:
        def step(st: AliasState) -> AliasState:
            if not st.history:
                raise RegistryError(f"alias {alias!r} of {self.name!r} has no earlier version to roll back to")
            return self.change_alias(st, st.history[-1], "rollback")
        return self._retry(alias, step, attempts).version

    def _retry(self, alias: str, step, attempts: int) -> AliasState:
        for _ in range(attempts):
            try:
                return step(self.alias_state(alias))
            except AliasConflict:
                time.sleep(0.01)
        raise RegistryError(f"alias {alias!r} of {self.name!r} kept changing under {attempts} attempts; try again")

    def _alias_seqs(self, alias: str) -> list[int]:
        return sorted(int(n[:-5]) for n in self.storage.list_dir(self.base, "aliases", alias)
                      if n.endswith(".json") and n[:-5].isdigit())


def _entry_name(seq: int) -> str:
    return f"{seq:010d}.json"


def _check_alias(alias: str) -> None:
    # Alias names become paths: nothing that could climb out of aliases/ or hide as a dotfile.
    if not ALIAS_NAME.match(alias or "") or alias.isdigit() or alias == "latest":
        raise RegistryError(f"invalid alias name {alias!r}: use letters, digits, '_', '.', '-' (not a number, "
                            f"not 'latest'), at most 64 characters")


def manifest_of(files: dict[str, bytes]) -> dict:
    return {"format": 1, "files": {rel: {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
                                   for rel, data in sorted(files.items()) if not rel.startswith("report/")}}


def _check(name: str, version: int, rel: str, data: bytes, entry: dict) -> None:
    got = hashlib.sha256(data).hexdigest()
    if got != entry["sha256"] or len(data) != entry["bytes"]:
        raise RegistryError(
            f"model {name!r} version {version}: file {rel} does not match {MANIFEST} (expected {entry['bytes']} bytes, "
            f"sha256 {entry['sha256'][:12]}..., found {len(data)} bytes, sha256 {got[:12]}...): it was changed or "
            f"truncated after registration; re-register the model or restore the file")


def metric_of(mv: ModelVersion) -> tuple[str, str, float]:
    m = mv.metrics
    return m["metric"], m["mode"], m["test"][m["metric"]]


def json_bytes(obj) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode()
