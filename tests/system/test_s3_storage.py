"""Ingest, training and the registry on a second filesystem type: S3, served by moto on 127.0.0.1.

Sources and the storage root are s3:// URIs naming a custom endpoint in their query (as for
MinIO), so every path rayline builds must keep the query last, and publishing must work
without directory renames (object stores have none).
"""

from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from rayline.config import config_from_dict
from rayline.data import load_ingest, run_ingest
from rayline.storage import Storage
from tests.conftest import MOTO_PORT, small_config, small_tables

BUCKET = "rayline-test"
QUERY = f"endpoint_override=127.0.0.1:{MOTO_PORT}&scheme=http&region=us-east-1"


def s3(path: str) -> str:
    return f"s3://{BUCKET}/{path}?{QUERY}"


@pytest.fixture(scope="module")
def s3fs():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=MOTO_PORT, verbose=False)
    server.start()
    fs = pafs.S3FileSystem(endpoint_override=f"127.0.0.1:{MOTO_PORT}", scheme="http", region="us-east-1",
                           allow_bucket_creation=True)
    fs.create_dir(BUCKET)
    yield fs
    server.stop()


def _upload(fs, tables: dict[str, pa.Table], prefix: str) -> None:
    for name, t in tables.items():
        pq.write_table(t, f"{BUCKET}/{prefix}/{name}.parquet", filesystem=fs)


def _raw_config(prefix: str) -> dict:
    raw = small_config(Path("unused"), Path("unused"), fmt="parquet")
    for name in ("trips", "stations", "vehicles"):
        raw["data"]["sources"][name]["path"] = s3(f"{prefix}/{name}.parquet")
    raw["storage"]["root"] = s3("root")
    return raw


def test_ingest_reads_and_publishes_on_s3(ray_local, s3fs):
    import ray

    tables = small_tables(600)
    trips = tables["trips"]
    # two rows that break rules: a negative distance, an unknown station
    bad = trips.slice(0, 2).set_column(1, "station", pa.array(["AAA", "ZZZ"]))
    bad = bad.set_column(3, "distance", pa.array([-5.0, 10.0]))
    tables["trips"] = pa.concat_tables([trips, bad.cast(trips.schema)])
    _upload(s3fs, tables, "data")
    cfg = config_from_dict(_raw_config("data"))
    storage = Storage(cfg.storage.root)

    first = run_ingest(cfg, storage)
    rows = first.manifest["rows"]
    assert not first.reused and rows["read"] == 602 and rows["quarantined"] == 2
    assert rows["read"] == rows["clean"] + rows["quarantined"] == rows["train"] + rows["valid"] + rows["test"] + 2
    assert first.path.startswith(f"s3://{BUCKET}/root/datasets/trips/") and first.path.endswith(QUERY)
    assert storage.is_complete(f"datasets/trips/{first.key}")
    # Ray Data opens the published split through the URI rayline hands out.
    assert ray.data.read_parquet(first.split_uri("train")).count() == rows["train"]
    quarantine = pq.read_table(first.quarantine_uri.split("?")[0][len("s3://"):], filesystem=s3fs)
    assert sorted(quarantine.column("rule").to_pylist()) == ["allowed", "range"]
    # nothing left under temporary names
    listed = [i.base_name for i in s3fs.get_file_info(pafs.FileSelector(f"{BUCKET}/root/datasets/trips"))]
    assert not [n for n in listed if n.startswith((".tmp-", ".old-"))]

    again = run_ingest(cfg, storage)
    assert again.reused and again.key == first.key
    assert load_ingest(cfg, storage).key == first.key

    # Forced rerun: publishing replaces the existing copy (object stores cannot rename it).
    forced = run_ingest(cfg, storage, force=True)
    assert forced.key == first.key and forced.manifest["rows"] == rows
    assert ray.data.read_parquet(forced.split_uri("test")).count() == rows["test"]


def test_training_and_registry_on_s3(ray_local, s3fs):
    """Checkpoints and model versions on the same S3 root (Ray Train gets the filesystem object)."""
    from rayline.pipeline import train_and_register

    _upload(s3fs, small_tables(800, seed=3), "train-data")
    raw = _raw_config("train-data")
    raw["storage"]["root"] = s3("train-root")
    raw["train"]["epochs"] = 2
    cfg = config_from_dict(raw)
    storage = Storage(cfg.storage.root)
    out = train_and_register(cfg, storage)
    version = out.version
    assert version.version == 1 and version.uri.startswith(f"s3://{BUCKET}/train-root/") and version.uri.endswith(QUERY)
    listed = [i.path for i in s3fs.get_file_info(pafs.FileSelector(f"{BUCKET}/train-root", recursive=True))]
    assert any("/runs/" in p and "checkpoint" in p for p in listed)
    assert any(p.endswith("/models/trips/1/_SUCCESS") for p in listed)
    assert train_and_register(cfg, storage).reused  # same data and config: the version is reused
