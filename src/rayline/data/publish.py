"""`rayline lookups publish`: a fresh lookup snapshot from the dimension and count sources as
they are now, without retraining.

The dimension tables go through the ingest's own validation (`ingest._load_dimensions`: rules,
unique keys, quarantine) and the counts through its own counting pass; the snapshot is written
like the ingest's (one Parquet file per lookup, checksummed), staged and published whole under
`<root>/datasets/<name>/snapshots/<id>/`, then named the newest in `snapshots/LATEST.json`.
A snapshot's id is the fingerprint of its files: publishing unchanged sources changes nothing.
Deployments with `serve.lookup_snapshot: newest` (and `rayline predict` with
`batch.lookup_snapshot: newest`) take the newest snapshot compatible with their model: the same
lookup files, each with the same columns and types.
"""

from __future__ import annotations

import time
from typing import Callable

from rayline import layout
from rayline.config import RaylineConfig
from rayline.data.lookup_store import SNAPSHOT_FILE, write_snapshot
from rayline.errors import InputError
from rayline.storage import Storage


def publish_lookups(cfg: RaylineConfig, storage: Storage, progress: Callable[[str], None] = lambda m: None) -> dict:
    """Validate, count, write and publish; returns the snapshot's description. Needs Ray when the
    config has count features (they are counted over the primary table on Ray Data)."""
    import pyarrow.parquet as pq

    from rayline.data.ingest import _count_features, _load_dimensions, resolve_source

    d = cfg.data
    if not (d.joins or d.counts):
        raise InputError("the config has no data.joins and no data.counts: there are no lookups to publish")
    t0 = time.perf_counter()
    resolved = {name: resolve_source(cfg, name, storage) for name in d.sources
                if any(j.table == name for j in d.joins) or (name == d.primary and d.counts)}
    dims, quarantined, dim_counts = _load_dimensions(cfg, resolved)
    if d.counts:
        progress(f"lookups: counting {', '.join(c.name for c in d.counts)} over {d.primary}")
        dims = {**dims, **_count_features(cfg, resolved[d.primary])}
    root = layout.lookup_snapshots(cfg.name)
    tmp = storage.temp_dir(root, "staging")
    try:
        desc = write_snapshot(storage, tmp, d.joins, d.counts, dims)
        for table, q in zip(dict.fromkeys(j.table for j in d.joins), quarantined):
            if q.num_rows:
                import io

                buf = io.BytesIO()
                pq.write_table(q, buf)
                storage.write_bytes(buf.getvalue(), tmp, "quarantine", f"{table}.parquet")
        desc.update(created=time.time(), sources={n: r.fingerprint() for n, r in resolved.items()},
                    tables=dim_counts, base=f"{root}/{desc['snapshot']}")
        storage.write_json(desc, tmp, SNAPSHOT_FILE)
        final = f"{root}/{desc['snapshot']}"
        if storage.is_complete(final):
            storage.delete_dir(tmp)  # the same files were published before: nothing changes
            reused = True
        else:
            storage.publish(tmp, final)
            reused = False
    except BaseException:
        storage.delete_dir(tmp)
        raise
    storage.write_json({"snapshot": desc["snapshot"], "published": time.time()}, root, layout.LATEST)
    progress(f"lookups: snapshot {desc['snapshot']} {'(unchanged)' if reused else 'published'} at {storage.uri(final)}")
    return {"stage": "lookups", "snapshot": desc["snapshot"], "reused": reused, "uri": storage.uri(final),
            "rows": desc["rows"], "tables": dim_counts, "seconds": round(time.perf_counter() - t0, 2)}
