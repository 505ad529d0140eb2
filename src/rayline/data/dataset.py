"""A published dataset: how it is keyed, what its manifest says, and opening it verified.

An ingest's output lives under `layout.dataset(name, key)`, where the key hashes the inputs'
fingerprints, the config's data section and FORMAT_VERSION: same inputs and data config, same
key, so a rerun reuses it. Training, tuning and evaluation open datasets through here and never
import the ingest's execution.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field

from rayline import __version__, layout
from rayline.config import RaylineConfig
from rayline.errors import InputError
from rayline.features.spec import FeatureSpec
from rayline.storage import Storage, join_uri

FORMAT_VERSION = 7  # bump when the output changes (4: x_cat int32, missing-only indicators; 5: regression target standardized;
#                    6: CSV string columns read as text, DECIMAL columns as numbers; 7: every declared CSV
#                    column read as text, broken CSV lines quarantined)
MANIFEST, SPEC_FILE = "manifest.json", "feature_spec.json"


@dataclass
class IngestResult:
    key: str
    path: str  # URI of the published dataset directory
    reused: bool
    manifest: dict
    spec: FeatureSpec = field(repr=False)

    def split_uri(self, split: str) -> str:
        return join_uri(self.path, "ready", f"split={split}")

    @property
    def quarantine_uri(self) -> str:
        return join_uri(self.path, "quarantine")

    def summary(self) -> dict:
        m = self.manifest
        return {"stage": "ingest", "key": self.key, "path": self.path, "reused": self.reused,
                "rows": m["rows"], "quarantine_by_rule": m["quarantine_by_rule"], "timings_s": m["timings_s"]}


def dataset_dir(cfg: RaylineConfig, key: str) -> str:
    return layout.dataset(cfg.name, key)


def plan_key(cfg: RaylineConfig, fingerprints: dict[str, str]) -> tuple[str, str]:
    """(fingerprint of the inputs, dataset key) from each source's fingerprint."""
    h = hashlib.sha256()
    for name in sorted(fingerprints):
        h.update(f"{name}:{fingerprints[name]}\n".encode())
    fingerprint = h.hexdigest()[:16]
    key = hashlib.sha256(f"{fingerprint}|{cfg.data_hash()}|{FORMAT_VERSION}".encode()).hexdigest()[:16]
    return fingerprint, key


def build_manifest(cfg: RaylineConfig, key: str, fingerprint: str, sources: dict, counts: dict, dim_counts: dict,
                   by_rule: dict, timings: dict) -> dict:
    """What a dataset is: where it came from, its row counts, quarantine by rule, timings (the
    per-file checksums are added once every file is written)."""
    return {
        "format_version": FORMAT_VERSION, "rayline_version": __version__, "name": cfg.name, "key": key,
        "created_unix": time.time(), "input_fingerprint": fingerprint, "config_hash": cfg.data_hash(),
        "sources": sources, "rows": counts, "dimensions": dim_counts, "quarantine_by_rule": dict(sorted(by_rule.items())),
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "throughput_rows_per_s": round(counts["read"] / max(timings["total"], 1e-9)),
    }


def mark_latest(cfg: RaylineConfig, storage: Storage, key: str) -> None:
    storage.write_json({"key": key}, layout.datasets(cfg.name), layout.LATEST)


def load_ingest(cfg: RaylineConfig, storage: Storage, key: str | None = None) -> IngestResult:
    """Find a published ingest (the latest one of this config by default) without running it."""
    if key is None:
        if not storage.exists(layout.datasets(cfg.name), layout.LATEST):
            raise InputError(f"no ingest has been run for {cfg.name!r} under {storage.uri()}: run `rayline ingest` first")
        key = storage.read_json(layout.datasets(cfg.name), layout.LATEST)["key"]
    if not storage.is_complete(dataset_dir(cfg, key)):
        raise InputError(f"ingest {key} of {cfg.name!r} is missing or incomplete under {storage.uri()}")
    return open_published(cfg, storage, key)


def open_published(cfg: RaylineConfig, storage: Storage, key: str) -> IngestResult:
    """A published dataset, after checking every file against the SHA-256 in its manifest."""
    final = dataset_dir(cfg, key)
    manifest = storage.read_json(final, MANIFEST)
    bad = storage.mismatches(manifest.get("files", {}), final)
    if bad:
        raise InputError(f"published dataset {storage.uri(final)} does not match its manifest.json: "
                         f"{'; '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}")
    spec = FeatureSpec.from_json(storage.read_bytes(final, SPEC_FILE))
    return IngestResult(key, storage.uri(final), True, manifest, spec)
