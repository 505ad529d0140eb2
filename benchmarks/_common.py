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
    from rayline.runtime import embedded_env
    os.environ.update({k: v for k, v in embedded_env().items() if k not in os.environ})  # as rayline's embedded Ray
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="ERROR")
    configure_data_context()
    storage = Storage(cfg.storage.root)
    out = train_and_register(cfg, storage)
    promote_version(cfg, storage, out.version.version, "production")
    return cfg, storage, deploy(cfg)


def one_replica_endpoint(work: Path, apps: int = 1):
    """An embedded Ray (the default HAProxy ingress) with the default model trained and promoted;
    returns (the overrides of a one-replica, 1-CPU endpoint on a free port, its config, storage,
    the training result). `apps`: how many such endpoints will be live at once (Ray's CPUs are
    logical: only one of them is loaded at a time, see `side_by_side`)."""
    import ray

    from rayline.config import ServeConfig, load_config
    from rayline.pipeline import promote_version, train_and_register
    from rayline.runtime import configure_data_context, free_port
    from rayline.serve.ingress import ingress_env
    from rayline.storage import Storage

    os.environ.update(ingress_env(ServeConfig()))
    from rayline.runtime import embedded_env
    os.environ.update({k: v for k, v in embedded_env().items() if k not in os.environ})  # as rayline's embedded Ray
    ray.init(num_cpus=max(os.cpu_count(), apps + 1), include_dashboard=False, logging_level="ERROR", log_to_driver=False)
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


def side_by_side(variants: dict[str, list[str]], base: list[str], work: Path, seconds: int, rounds: int,
                 concurrency: tuple[int, ...] = (64, 1), check=None) -> dict[str, dict[int, list[dict]]]:
    """Every variant deployed at once, each its own one-replica app (`/<variant>`), then measured in
    short alternating windows: round r loads each variant in turn (the order rotating), one wrk
    window per concurrency. A variant's windows sit seconds away from its rival's, so the host's
    drift (it moves 30 % over minutes here) lands on both sides of a round's ratio alike, and no
    variant pays for a fresh replica. `check(name, url)` runs once per variant after it is warm.
    Returns {variant: {concurrency: [wrk result per round]}}."""
    from rayline.config import load_config
    from rayline.serve.deploy import deploy
    from serve import wrk

    urls = {}
    for i, (name, overrides) in enumerate(variants.items()):
        urls[name] = deploy(load_config(ROOT / "configs/flights.yaml", [
            *base, f"serve.app_name=v{i}", f"serve.route_prefix=/v{i}", *overrides])).url
    for name, url in urls.items():
        wrk(url, 16, 3, work)  # warm-up, discarded: lookup indexes, allocator, first batches
        if check:
            check(name, url)
    names = list(variants)
    rows = {name: {c: [] for c in concurrency} for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            for c in concurrency:
                rows[name][c].append(wrk(urls[name], c, seconds, work))
    return rows


def paired(rows, a: str, b: str, c: int, key: str) -> list[float]:
    """Per round, variant a's figure over variant b's (the same round: seconds apart)."""
    return [x[key] / y[key] for x, y in zip(rows[a][c], rows[b][c])]


def spread(ratios: list[float]) -> dict:
    """Median and quartiles of per-round ratios."""
    import statistics

    q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
    return {"median": round(statistics.median(ratios), 3), "q1": round(q[0], 3), "q3": round(q[2], 3),
            "min": round(min(ratios), 3), "max": round(max(ratios), 3)}
