"""The lookup snapshot on storage: written by the ingest beside its dataset (or published alone
by `rayline lookups publish`, data/publish.py), read by serving and batch inference (layout:
`<dataset or snapshot dir>/lookups/<lookup>.parquet`, each file's SHA-256 and schema in the
snapshot's description: the dataset's manifest, or the published snapshot's snapshot.json; the
id of the snapshot a version was evaluated with is in its lineage).

One file per lookup: a join's validated dimension table (its keys and joined columns, keys
unique) or a count feature's table (its keys as text and the count). Nothing is recomputed at
serve time that the ingest computed.
"""

from __future__ import annotations

import hashlib
import io
import logging
import time

import pyarrow as pa
import pyarrow.parquet as pq

from rayline import layout
from rayline.errors import RegistryError
from rayline.features.lookups import Lookups, fingerprint
from rayline.storage import Storage

log = logging.getLogger(__name__)
LOOKUPS_DIR = "lookups"
SNAPSHOT_FILE = "snapshot.json"


def lookup_names(joins, counts) -> list[str]:
    """One file name per lookup: a table may be joined twice (airports for origin and for dest)."""
    return [f"join{i}-{j.table}" for i, j in enumerate(joins)] + [f"count-{c.name}" for c in counts]


def write_snapshot(storage: Storage, dataset_tmp: str, joins, counts, dims: dict) -> dict:
    """Write each prepared lookup's source table under `dataset_tmp/lookups/`; returns the
    snapshot's description for the manifest and the lineage (files are checksummed with the dataset)."""
    names = lookup_names(joins, counts)
    tables = [dims[i].source for i in range(len(joins))] + [dims[c.name].source for c in counts]
    files, rows, schemas = {}, {}, {}
    for name, table in zip(names, tables):
        buf = io.BytesIO()
        pq.write_table(table, buf)
        data = buf.getvalue()
        storage.write_bytes(data, dataset_tmp, LOOKUPS_DIR, f"{name}.parquet")
        files[name] = hashlib.sha256(data).hexdigest()
        rows[name] = table.num_rows
        schemas[name] = schema_of(table.schema)
    return {"snapshot": fingerprint(files) if files else None, "files": files, "rows": rows, "schemas": schemas}


def schema_of(schema: pa.Schema) -> list[list[str]]:
    return [[f.name, str(f.type)] for f in schema]


def read_snapshot(storage: Storage, model_name: str, ingest_key: str, description: dict, joins, counts) -> Lookups:
    """The snapshot a version's lineage names, checked against its checksums, ready for lookups."""
    t = time.perf_counter()
    names = lookup_names(joins, counts)
    tables: dict[str, pa.Table] = {}
    base = f"{description.get('base') or layout.dataset(model_name, ingest_key)}/{LOOKUPS_DIR}"
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


def snapshot_of(registry, version: int, spec, follow: str = "model") -> Lookups | None:
    """The lookup snapshot for a version, loaded (`registry`: a Registry): the one its lineage
    names, or with follow="newest" the newest published snapshot compatible with it (see
    `newest_compatible`). None with follow="none", for a model without lookups, or for one
    registered before snapshots existed (its clients send the looked-up fields themselves)."""
    lineage = registry.get(version).lineage
    desc = lineage.get("lookups")
    if not desc or not (spec.joins or spec.counts) or follow == "none":
        return None
    if follow == "newest":
        desc = newest_compatible(registry.storage, registry.name, lineage["ingest_key"], desc) or desc
    return read_snapshot(registry.storage, registry.name, lineage["ingest_key"], desc, spec.joins, spec.counts)


def newest_published(storage: Storage, model_name: str) -> dict | None:
    """The newest published snapshot's description, or None if none was published."""
    root = layout.lookup_snapshots(model_name)
    try:
        latest = storage.read_json(root, layout.LATEST)["snapshot"]
        return storage.read_json(root, latest, SNAPSHOT_FILE)
    except (FileNotFoundError, OSError, KeyError, ValueError):
        return None


def own_schemas(storage: Storage, model_name: str, ingest_key: str, desc: dict) -> dict:
    """The schema of each file of a version's own snapshot (read from the footers where an older
    ingest did not record them)."""
    if desc.get("schemas"):
        return desc["schemas"]
    base = f"{desc.get('base') or layout.dataset(model_name, ingest_key)}/{LOOKUPS_DIR}"
    return {name: schema_of(pq.read_schema(io.BytesIO(storage.read_bytes(base, f"{name}.parquet"))))
            for name in desc.get("files", {})}


def newest_compatible(storage: Storage, model_name: str, ingest_key: str, own: dict) -> dict | None:
    """The newest published snapshot if it fits the version whose own snapshot is `own`: the same
    lookup files, each with the same columns and types. None: there is none, or it does not fit
    (the version keeps its own)."""
    newest = newest_published(storage, model_name)
    if newest is None or newest.get("snapshot") == own.get("snapshot"):
        return None
    if newest.get("schemas") != own_schemas(storage, model_name, ingest_key, own):
        log.warning("lookup snapshot %s does not fit the model evaluated with %s (other columns or types): "
                    "keeping the model's own", newest.get("snapshot"), own.get("snapshot"))
        return None
    return newest
