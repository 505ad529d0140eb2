"""The lookup snapshot on storage: written by the ingest beside its dataset, read by serving and
batch inference (layout: `<dataset>/lookups/<lookup>.parquet`, each file's SHA-256 in the
dataset's manifest, the snapshot's id in every version's lineage).

One file per lookup: a join's validated dimension table (its keys and joined columns, keys
unique) or a count feature's table (its keys as text and the count). Nothing is recomputed at
serve time that the ingest computed.
"""

from __future__ import annotations

import hashlib
import io
import time

import pyarrow as pa
import pyarrow.parquet as pq

from rayline import layout
from rayline.errors import RegistryError
from rayline.features.lookups import Lookups, fingerprint
from rayline.storage import Storage

LOOKUPS_DIR = "lookups"


def lookup_names(joins, counts) -> list[str]:
    """One file name per lookup: a table may be joined twice (airports for origin and for dest)."""
    return [f"join{i}-{j.table}" for i, j in enumerate(joins)] + [f"count-{c.name}" for c in counts]


def write_snapshot(storage: Storage, dataset_tmp: str, joins, counts, dims: dict) -> dict:
    """Write each prepared lookup's source table under `dataset_tmp/lookups/`; returns the
    snapshot's description for the manifest and the lineage (files are checksummed with the dataset)."""
    names = lookup_names(joins, counts)
    tables = [dims[i].source for i in range(len(joins))] + [dims[c.name].source for c in counts]
    files, rows = {}, {}
    for name, table in zip(names, tables):
        buf = io.BytesIO()
        pq.write_table(table, buf)
        data = buf.getvalue()
        storage.write_bytes(data, dataset_tmp, LOOKUPS_DIR, f"{name}.parquet")
        files[name] = hashlib.sha256(data).hexdigest()
        rows[name] = table.num_rows
    return {"snapshot": fingerprint(files) if files else None, "files": files, "rows": rows}


def read_snapshot(storage: Storage, model_name: str, ingest_key: str, description: dict, joins, counts) -> Lookups:
    """The snapshot a version's lineage names, checked against its checksums, ready for lookups."""
    t = time.perf_counter()
    names = lookup_names(joins, counts)
    tables: dict[str, pa.Table] = {}
    base = f"{layout.dataset(model_name, ingest_key)}/{LOOKUPS_DIR}"
    for name in names:
        want = description.get("files", {}).get(name)
        try:
            data = storage.read_bytes(base, f"{name}.parquet")
        except (FileNotFoundError, OSError) as e:
            raise RegistryError(f"lookup snapshot {description.get('snapshot')}: {base}/{name}.parquet is missing "
                                f"({type(e).__name__}); re-run the ingest") from None
        if want and hashlib.sha256(data).hexdigest() != want:
            raise RegistryError(f"lookup snapshot {description.get('snapshot')}: {base}/{name}.parquet does not match "
                                "its checksum")
        tables[name] = pq.read_table(io.BytesIO(data))
    by_lookup = {i: tables[names[i]] for i in range(len(joins))}
    by_lookup.update({c.name: tables[names[len(joins) + k]] for k, c in enumerate(counts)})
    return Lookups.from_tables(description.get("snapshot") or "", joins, counts, by_lookup,
                               load_s=round(time.perf_counter() - t, 3))


def snapshot_of(registry, version: int, spec) -> Lookups | None:
    """The lookup snapshot a version's lineage names, loaded (`registry`: a Registry). None for a
    model without lookups, or one registered before snapshots existed (its clients send the
    looked-up fields themselves)."""
    lineage = registry.get(version).lineage
    desc = lineage.get("lookups")
    if not desc or not (spec.joins or spec.counts):
        return None
    return read_snapshot(registry.storage, registry.name, lineage["ingest_key"], desc, spec.joins, spec.counts)
