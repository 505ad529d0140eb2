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


def one_replica_endpoint(work: Path):
    """An embedded Ray (the default HAProxy ingress) with the default model trained and promoted;
    returns (the overrides of a one-replica, 1-CPU endpoint on a free port, its config, storage,
    the training result)."""
    import ray

    from rayline.config import ServeConfig, load_config
    from rayline.pipeline import promote_version, train_and_register
    from rayline.runtime import configure_data_context, free_port
    from rayline.serve.ingress import ingress_env
    from rayline.storage import Storage

    os.environ.update(ingress_env(ServeConfig()))
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    configure_data_context(progress_bars=False)
    base = [f"storage.root={work / 'root'}", f"serve.port={free_port()}", "serve.autoscaling.min_replicas=1",
            "serve.autoscaling.max_replicas=1", "serve.cpus_per_replica=1"]
    cfg = load_config(ROOT / "configs/flights.yaml", base)
    storage = Storage(cfg.storage.root)
    out = train_and_register(cfg, storage)
    promote_version(cfg, storage, out.version.version, "production")
    return base, cfg, storage, out


def register_candidate(storage, cfg, out, rounds_less: int = 5) -> int:
    """A second version (the booster without its last rounds: other predictions, the same cost),
    aliased `candidate`."""
    from rayline.model import boosted
    from rayline.registry import Registry

    reg = Registry(storage, cfg.name)
    v = out.version.version
    booster = boosted.load(reg.read_file(v, "booster.ubj"))
    files = {n: reg.read_file(v, n) for n in ("feature_spec.json", "model_config.json")}
    cand = reg.register({**files, "booster.ubj": bytes(booster[: booster.num_boosted_rounds() - rounds_less].save_raw("ubj"))},
                        out.version.metrics, {**out.version.lineage, "run_name": "candidate"}).version
    reg.set_alias("candidate", cand)
    return cand
