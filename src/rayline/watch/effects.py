"""The watcher's side effects on a real cluster: what `Hooks.of` builds from the config.

Observations come from where they already are: the endpoint's drift counts from its board actor
(no HTTP, no key needed inside the cluster), the live log from storage, the sources' listing.
Retraining is the pipeline's own ingest -> train -> evaluate -> register; the gate and the
promotion are the registry's; the split is a redeploy with a new `serve.traffic`, which Serve
applies to the running replicas as a user_config change (no restart, no dropped request).
"""

from __future__ import annotations

import time

from rayline.config import RaylineConfig, TrafficArm
from rayline.errors import RaylineError
from rayline.registry import Registry, promote
from rayline.storage import Storage
from rayline.watch.journal import Entry
from rayline.watch.loop import Hooks
from rayline.watch.policy import Observations, Production


def hooks(cfg: RaylineConfig, storage: Storage, registry: Registry, progress) -> Hooks:
    from rayline.pipeline import RunContext, reevaluator
    from rayline.tracking import Tracker

    ctx = RunContext(cfg, storage, registry, Tracker(cfg, storage, progress=progress), progress)

    def observe(prod: Production) -> Observations:
        obs = Observations(now=time.time(), production=prod)
        t = cfg.watch.triggers
        if t.new_data:
            try:
                from rayline.data.ingest import sources_fingerprint

                obs.sources_fingerprint = sources_fingerprint(cfg, storage)
            except Exception as e:  # noqa: BLE001 - a missing source is a note, not a crash of the loop
                obs.notes.append(f"sources not readable: {type(e).__name__}: {str(e)[:300]}")
        if t.drift_psi is not None:
            obs.drift = endpoint_drift(cfg, registry, prod.version, obs.notes)
        if t.live_metric_drop is not None:
            obs.live = live_report(cfg, storage, time.time() - t.live_window_s)
        return obs

    def retrain(fired: list[dict], claim: Entry):
        from rayline.pipeline import train_in

        run_cfg, chosen = window_config(cfg, storage, registry, claim.get("production"))
        run = RunContext(run_cfg, storage, registry, ctx.tracker, progress)
        ingest = run.ingest()
        window = {**run_cfg.data.split.model_dump(mode="json", include={"method", "column", "train_from",
                                                                        "valid_from", "test_from"}),
                  **chosen, "ingest_key": ingest.key, "rows": ingest.manifest.get("rows")}
        lineage = {"watch": {"journal_seq": claim.seq, "triggers": fired, "data_window": window,
                             "production": claim.get("production")}}
        if cfg.watch.retrain.tune_trials:  # a search within the budget, from the tune section's space
            from rayline.pipeline import tune_and_register

            return tune_and_register(run_cfg, storage, trials=cfg.watch.retrain.tune_trials, progress=progress,
                                     lineage=lineage).version
        return train_in(run, ingest=ingest, lineage=lineage).version

    def gate(version: int) -> dict:
        """The promotion gate, dry (on the candidate's test split: the newest slice), and the
        candidate on production's own test split too (the standard one it was judged on)."""
        p = promote(registry, version, cfg.alias, tolerance=cfg.promote.tolerance, margin=cfg.promote.baseline_margin,
                    reevaluate=reevaluator(ctx), dry_run=True)
        out = p.summary()
        if p.previous is not None:
            prev = registry.get(p.previous)
            key = prev.lineage.get("ingest_key")
            if key and key != registry.get(version).lineage.get("ingest_key"):
                try:
                    _, model = registry.load(version)
                    ev = ctx.evaluate(model, ctx.ingest(key).split_uri("test"))
                    out["on_production_test_split"] = {"metric": ev.metric, "candidate": ev.value,
                                                       "production": prev.metrics.get("test", {}).get(ev.metric)}
                except Exception as e:  # noqa: BLE001 - informative; the gate above decided
                    out["on_production_test_split"] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
        return out

    def do_promote(version: int, details: dict) -> dict:
        p = promote(registry, version, cfg.alias, tolerance=cfg.promote.tolerance, margin=cfg.promote.baseline_margin,
                    reevaluate=reevaluator(ctx), details=details)
        return p.summary()

    def set_traffic(arms):
        from ray import serve

        from rayline.serve.deploy import deploy

        if cfg.serve.app_name not in serve.status().applications:
            raise RaylineError(f"watch.canary: the endpoint {cfg.serve.app_name!r} is not running on this cluster; "
                               f"start it (rayline serve / deploy) or set watch.canary.enabled=false")
        traffic = [TrafficArm(alias=a, weight=w) for a, w in arms] if arms else []
        deploy(cfg.model_copy(update={"serve": cfg.serve.model_copy(update={"traffic": traffic})}), registry=registry,
               progress=progress)

    return Hooks(observe=observe, retrain=retrain, gate=gate, promote=do_promote, set_traffic=set_traffic,
                 live_report=lambda since: live_report(cfg, storage, since),
                 track=lambda entry: ctx.tracker.record_decision(cfg.name, entry))


def window_config(cfg: RaylineConfig, storage: Storage, registry: Registry,
                  production: int | None) -> tuple[RaylineConfig, dict]:
    """The config a retrain ingests with (`watch.retrain`'s window over the sources' time
    range), and what was chosen (the window, the newest time: a later new_only starts there)."""
    r = cfg.watch.retrain
    if cfg.data.split.method != "time" or (r.window == "all" and not r.test_days):
        return cfg, {"window": "all"}
    from rayline.data.ingest import sources_time_range

    from rayline.watch.policy import parse_time, data_window

    bare = cfg.model_copy(update={"data": cfg.data.model_copy(update={"split": cfg.data.split.model_copy(
        update={"train_from": None, "until": None})})})
    span = sources_time_range(bare, storage)
    prod_newest = None
    if production is not None:
        prod_newest = parse_time((registry.get(production).lineage.get("watch") or {}).get("data_window", {}).get("newest"))
    split, chosen = data_window(cfg.data.split, r, span[1] if span else None, prod_newest)
    return cfg.model_copy(update={"data": cfg.data.model_copy(update={"split": split})}), chosen


def endpoint_drift(cfg: RaylineConfig, registry: Registry, version: int, notes: list[str]) -> dict | None:
    """The drift report over every replica's counts for `version`, from the endpoint's board."""
    import ray

    from rayline.serve.monitor import WINDOW_S, drift_report

    try:
        board = ray.get_actor(f"rayline-drift-{cfg.serve.app_name}", namespace="rayline")
        snaps = ray.get(board.collect.remote(version, WINDOW_S), timeout=30)
    except Exception as e:  # noqa: BLE001 - no endpoint yet, or it counted nothing
        notes.append(f"no drift counts from endpoint {cfg.serve.app_name!r}: {type(e).__name__}")
        return None
    if not snaps:
        notes.append(f"endpoint {cfg.serve.app_name!r} has no drift counts for version {version} yet")
        return None
    _, model = registry.load(version)
    return drift_report(model.spec, snaps, time.time() - WINDOW_S)


def live_report(cfg: RaylineConfig, storage: Storage, since: float) -> dict:
    from rayline.serve.live_logs import LiveLogs

    logs = LiveLogs.at(storage, cfg.name, cfg.serve.app_name, cfg.serve.prediction_log, writer="watch")
    classes = cfg.data.label.classes
    return logs.report(cfg.task, classes, max(1.0, time.time() - since))
