"""Shared set-up for the serving benchmarks: train a small model on the default data, promote it,
deploy it on an embedded Ray."""

from __future__ import annotations

import os
import socket
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A free TCP port outside Ray's worker range (10002-19999). A fixed port fails to bind for
    ~60 s after a load test leaves its sockets in TIME_WAIT."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if not 10002 <= port <= 19999:
            return port


def deployed_model(overrides: list[str]):
    import ray

    from rayline.config import load_config
    from rayline.pipeline import promote_version, train_and_register
    from rayline.runtime import configure_data_context
    from rayline.serve.deploy import deploy
    from rayline.storage import Storage

    cfg = load_config(ROOT / "configs/flights.yaml", overrides)
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="ERROR")
    configure_data_context()
    storage = Storage(cfg.storage.root)
    out = train_and_register(cfg, storage)
    promote_version(cfg, storage, out.version.version, "production")
    return cfg, storage, deploy(cfg, str(ROOT / "configs/flights.yaml"), overrides)
