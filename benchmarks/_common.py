"""Shared set-up for the serving benchmarks: train a small model on the default data, promote it,
deploy it on an embedded Ray."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


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
    return cfg, storage, deploy(cfg)
