"""The commands: each names its options and hands one stage function to the runner.

Every command that takes --config also takes repeatable --set dotted.key=value overrides and
--json, which makes its final summary one JSON object on the last line of stdout.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from typing import Annotated, Optional

import typer

from rayline.cli import render
from rayline.cli.runner import end_live, progress, run_body, run_stage

# A stop waits this long for Serve to drain the app (its replicas' graceful_shutdown_timeout_s
# is 20 s), then exits anyway: a stop must end.
DRAIN_LIMIT_S = 30

app = typer.Typer(add_completion=False, no_args_is_help=True, help="rayline: an ML pipeline on one Ray cluster.")
config_app = typer.Typer(no_args_is_help=True, help="Validate and show pipeline configs.")
data_app = typer.Typer(no_args_is_help=True, help="Data utilities.")
models_app = typer.Typer(no_args_is_help=True, help="The model registry: list, show, promote, rollback.")
app.add_typer(config_app, name="config")
app.add_typer(data_app, name="data")
app.add_typer(models_app, name="models")
lookups_app = typer.Typer(no_args_is_help=True, help="Lookup snapshots: the dimension tables and counts features come through.")
app.add_typer(lookups_app, name="lookups")


@app.callback()
def _global(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="also show Ray's, Ray Data's and Serve's "
                                                  "own logs (default: in the session's log files)")] = False) -> None:
    if verbose:
        os.environ["RAYLINE_VERBOSE"] = "1"


ConfigOpt = Annotated[str, typer.Option("--config", "-c", help="pipeline YAML file")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="override: dotted.key=value (repeatable)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print the final summary as one JSON line")]
AddressOpt = Annotated[Optional[str], typer.Option("--address", help="Ray cluster address (default: embedded local Ray)")]
AliasOpt = Annotated[Optional[str], typer.Option("--alias", help="registry alias (default: the config's alias)")]
ModelOpt = Annotated[Optional[str], typer.Option("--version", help="model version or alias (default: the config's alias)")]


# ------------------------------------------------------------------ config
@config_app.command("validate")
def config_validate(file: str, set_: SetOpt = None, as_json: JsonOpt = False) -> None:
    """Check a config file; exit 2 with the field, value and what is allowed if it is invalid."""
    run_stage(file, set_, as_json, lambda cfg, _: {"config": file, "name": cfg.name, "valid": True,
                                                   "config_hash": cfg.config_hash()},
              lambda s: typer.echo(f"{file}: valid (pipeline {s['name']!r}, hash {s['config_hash']})"))


@config_app.command("show")
def config_show(file: str, set_: SetOpt = None, as_json: JsonOpt = False) -> None:
    """Print the fully resolved config, defaults included."""
    import yaml

    run_stage(file, set_, as_json, lambda cfg, _: {"config": cfg.model_dump(mode="json")},
              lambda s: typer.echo(yaml.safe_dump(s["config"], sort_keys=False), nl=False))  # = dump_config


# ------------------------------------------------------------------ data
@app.command()
def ingest(config: ConfigOpt, set_: SetOpt = None, address: AddressOpt = None, force: bool = False,
           as_json: JsonOpt = False) -> None:
    """Read, join, validate, split and preprocess the data of a config (reused when unchanged)."""
    from rayline.data import run_ingest

    run_stage(config, set_, as_json, lambda cfg, st: run_ingest(cfg, st, force=force, progress=progress).summary(),
              render.ingest, ray=True, address=address)


@data_app.command("synth")
def data_synth(rows: Annotated[int, typer.Option("--rows", help="rows to write")],
               out: Annotated[str, typer.Option("--out", help="output directory or URI")],
               shard_rows: int = 1_000_000, seed: int = 0, as_json: JsonOpt = False) -> None:
    """Write a flights-like Parquet data set of any size (streamed shard by shard)."""
    from rayline.data.synth import synth_flights

    def body():
        r = synth_flights(rows, out, shard_rows=shard_rows, seed=seed)
        return {"rows": r.rows, "shards": r.shards, "path": r.path, "seconds": round(r.seconds, 2)}
    run_body(body, as_json, render.synth)


# ------------------------------------------------------------------ training and registry
@app.command()
def train(config: ConfigOpt, set_: SetOpt = None, address: AddressOpt = None,
          run_name: Annotated[Optional[str], typer.Option("--run-name", help="resume/identify a run")] = None,
          fresh: Annotated[bool, typer.Option("--fresh", help="start over instead of resuming")] = False,
          as_json: JsonOpt = False) -> None:
    """Train with Ray Train (resuming a run of the same name), evaluate on test, register."""
    from rayline.pipeline import train_and_register

    def stage(cfg, storage):
        t0 = time.perf_counter()
        out = train_and_register(cfg, storage, run_name=run_name, fresh=fresh, progress=progress)
        return {**out.summary(), "seconds": round(time.perf_counter() - t0, 1)}
    run_stage(config, set_, as_json, stage, render.train, ray=True, address=address)


@app.command()
def tune(config: ConfigOpt, set_: SetOpt = None, address: AddressOpt = None,
         trials: Annotated[Optional[int], typer.Option("--trials", min=1, help="trials (default: tune.trials)")] = None,
         fresh: Annotated[bool, typer.Option("--fresh", help="start over instead of resuming")] = False,
         promote: Annotated[bool, typer.Option("--promote/--no-promote",
                                               help="promote the best through the gate to the config's alias")] = True,
         as_json: JsonOpt = False) -> None:
    """Tune training with Ray Tune (ASHA); register the best trial, resuming a killed run."""
    from rayline.pipeline import tune_and_register

    run_stage(config, set_, as_json, lambda cfg, st: tune_and_register(
        cfg, st, trials=trials, fresh=fresh, promote_to=cfg.alias if promote else None, progress=progress).summary(),
        render.tune, ray=True, address=address)


@app.command()
def evaluate(config: ConfigOpt, set_: SetOpt = None,
             version: Annotated[Optional[str], typer.Option("--version", help="number, alias or latest")] = None,
             as_json: JsonOpt = False) -> None:
    """Recompute metrics and the report of a registered version on its test split."""
    from rayline.pipeline import evaluate_version

    run_stage(config, set_, as_json, lambda cfg, st: evaluate_version(cfg, st, version), render.evaluate)


@models_app.command("list")
def models_list(config: ConfigOpt, set_: SetOpt = None, as_json: JsonOpt = False) -> None:
    """Versions with their test metric and aliases."""
    from rayline.registry import Registry

    def stage(cfg, storage):
        reg = Registry.of(cfg, storage)
        aliases = reg.aliases()
        rows = [{**reg.get(v).summary(), "aliases": sorted(a for a, x in aliases.items() if x == v)}
                for v in reg.versions()]
        return {"model": reg.name, "versions": rows, "aliases": aliases}
    run_stage(config, set_, as_json, stage, render.models)


@models_app.command("show")
def models_show(version: str, config: ConfigOpt, set_: SetOpt = None, as_json: JsonOpt = False) -> None:
    """Metrics and lineage of one version (a number, an alias or latest)."""
    from rayline.registry import Registry

    def stage(cfg, storage):
        reg = Registry.of(cfg, storage)
        mv = reg.get(reg.resolve(version))
        return {"version": mv.version, "uri": mv.uri, "metrics": mv.metrics, "lineage": mv.lineage,
                "aliases": sorted(a for a, x in reg.aliases().items() if x == mv.version)}
    run_stage(config, set_, as_json, stage)


@models_app.command("history")
def models_history(config: ConfigOpt, set_: SetOpt = None, alias: AliasOpt = None, as_json: JsonOpt = False) -> None:
    """Every change of an alias: version, previous, promote/force/rollback, metrics compared, when."""
    from rayline.registry import Registry

    run_stage(config, set_, as_json, lambda cfg, st: {"alias": alias or cfg.alias,
                                                      "changes": Registry.of(cfg, st).alias_log(alias or cfg.alias)},
              render.alias_history)


@models_app.command("promote")
def models_promote(version: str, config: ConfigOpt, set_: SetOpt = None, alias: AliasOpt = None,
                   force: Annotated[bool, typer.Option("--force", help="promote even if worse than the current one")] = False,
                   as_json: JsonOpt = False) -> None:
    """Point an alias at a version, refused if it is worse than the current one beyond tolerance."""
    from rayline.pipeline import promote_version

    run_stage(config, set_, as_json, lambda cfg, st: promote_version(cfg, st, version, alias or cfg.alias, force),
              render.promotion)


@models_app.command("rollback")
def models_rollback(config: ConfigOpt, set_: SetOpt = None, alias: AliasOpt = None, as_json: JsonOpt = False) -> None:
    """Point an alias back at the version it had before."""
    from rayline.pipeline import rollback_alias

    run_stage(config, set_, as_json, lambda cfg, st: rollback_alias(cfg, st, alias or cfg.alias), render.rollback)


# ------------------------------------------------------------------ the whole pipeline
@app.command()
def run(config: ConfigOpt, set_: SetOpt = None, address: AddressOpt = None,
        fresh: Annotated[bool, typer.Option("--fresh", help="retrain even if data and config are unchanged")] = False,
        keep_serving: Annotated[bool, typer.Option("--keep-serving", help="keep the endpoint up until Ctrl-C")] = False,
        as_json: JsonOpt = False) -> None:
    """ingest -> train -> evaluate -> register -> promote -> deploy -> smoke request."""
    from rayline.pipeline import run_pipeline

    def stage(cfg, storage):
        result = run_pipeline(cfg, storage, fresh=fresh, progress=progress)
        if keep_serving:
            end_live()  # nothing to animate while serving; the line below must not be redrawn away
            typer.echo(f"serving at {result.stages['deploy']['url']}; Ctrl-C stops", err=True)
            _serve_until_stopped(cfg.serve.app_name)
        return result.summary()
    run_stage(config, set_, as_json, stage, render.pipeline, ray=True, address=address, serving=True)


# ------------------------------------------------------------------ serving
@app.command("serve")
def serve_cmd(config: ConfigOpt, set_: SetOpt = None, address: AddressOpt = None, version: ModelOpt = None,
              as_json: JsonOpt = False) -> None:
    """Deploy the endpoint (embedded local Ray unless --address) and serve until Ctrl-C."""
    from rayline.serve.deploy import deploy

    def stage(cfg, _):
        d = deploy(cfg, version, progress=progress)
        end_live()  # nothing to animate while serving; the line below must not be redrawn away
        typer.echo(json.dumps(d.summary()) if as_json else
                   f"serving {cfg.name} version {d.model_version} at {d.url} (docs: {d.url}/docs); Ctrl-C stops")
        _serve_until_stopped(cfg.serve.app_name)
    run_stage(config, set_, as_json, stage, ray=True, address=address, serving=True)


def _serve_until_stopped(app_name: str) -> None:
    """Block until Ctrl-C or SIGTERM (what Kubernetes and systemd send), then delete the app:
    Serve stops routing to it and its replicas finish their in-flight requests
    (graceful_shutdown_timeout_s). One line, exit 0: a requested stop is not a crash. Python's
    own SIGTERM handler replaces the one Ray's core installs, which dumps a stack trace."""
    import signal

    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stop.wait(1.0):
            pass
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    from ray import serve

    from rayline.runtime import embedded_ray_alive, end_embedded_processes

    t0 = time.perf_counter()
    drain = threading.Thread(target=serve.delete, args=(app_name,), daemon=True)
    drain.start()
    while drain.is_alive() and time.perf_counter() - t0 < DRAIN_LIMIT_S:
        if not embedded_ray_alive():
            # The signal went to the whole process group and ended the embedded Ray too: nothing
            # is left to drain, and every call to Ray would wait a minute for its GCS. Serve's
            # HAProxy ends with its parent (rayline-haproxy), the replicas with their raylet; what
            # is still running is ended here, so nothing outlives rayline.
            end_embedded_processes()
            _exit_now(0, f"stopped: the signal also reached the embedded Ray (same process group); {app_name} "
                         "ended without a drain (signal rayline alone for one, e.g. systemd KillMode=mixed)")
        drain.join(0.1)
    if drain.is_alive():
        _exit_now(1, f"stopped: {app_name} did not drain within {DRAIN_LIMIT_S}s; exiting")
    typer.echo(f"stopped: {app_name} drained in {time.perf_counter() - t0:.1f}s", err=True)


def _exit_now(code: int, line: str) -> None:
    """Exit without Ray's shutdown (it would wait for a GCS that is gone or stuck)."""
    typer.echo(line, err=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


@app.command("deploy")
def deploy_cmd(config: ConfigOpt, set_: SetOpt = None, address: AddressOpt = None, version: ModelOpt = None,
               as_json: JsonOpt = False) -> None:
    """Deploy or update the endpoint on a running cluster (a version change reconfigures live replicas)."""
    from rayline.serve.deploy import deploy

    run_stage(config, set_, as_json, lambda cfg, _: deploy(cfg, version, progress=progress).summary(), render.deployed,
              ray=True, address=address or "auto")


@app.command("serve-config")
def serve_config_cmd(config: ConfigOpt, set_: SetOpt = None, version: ModelOpt = None) -> None:
    """Print the Serve config (for `serve deploy`, or a RayService's serveConfigV2), with the
    resolved config inside it: the cluster needs no copy of the config file."""
    import yaml

    from rayline.serve.deploy import serve_config

    run_stage(config, set_, False, lambda cfg, _: typer.echo(
        yaml.safe_dump(serve_config(cfg, version), sort_keys=False), nl=False))


@lookups_app.command("publish")
def lookups_publish(config: ConfigOpt, set_: SetOpt = None, address: AddressOpt = None, as_json: JsonOpt = False) -> None:
    """A fresh snapshot of the dimension tables and counts, as the sources are now, through the
    ingest's validation and quarantine; deployments with serve.lookup_snapshot=newest take it
    (when its files, columns and types fit their model) without a restart."""
    from rayline.data.publish import publish_lookups

    run_stage(config, set_, as_json, lambda cfg, st: publish_lookups(cfg, st, progress), ray=True, address=address)


def _live_logs(cfg, storage):
    """The endpoint's logs and the label its model predicts (the alias's version)."""
    from rayline.features.spec import FeatureSpec
    from rayline.registry import Registry
    from rayline.serve.live_logs import LiveLogs

    reg = Registry.of(cfg, storage)
    label = FeatureSpec.from_json(reg.read_file(reg.resolve(cfg.alias), "feature_spec.json")).label
    return LiveLogs.at(storage, cfg.name, cfg.serve.app_name, cfg.serve.prediction_log, "cli"), label


@app.command()
def live(config: ConfigOpt, set_: SetOpt = None,
         window_s: Annotated[Optional[int], typer.Option("--window-s", min=60, help="seconds back (default: serve.live_window_s)")] = None,
         as_json: JsonOpt = False) -> None:
    """Per model version on live traffic: requests, errors, latency, scores and, where outcomes
    arrived, AUC / log loss (RMSE, accuracy) with 95 % intervals; shadow agreement. From the logs."""
    def stage(cfg, storage):
        logs, label = _live_logs(cfg, storage)
        return logs.report(label.task, label.classes, window_s or cfg.serve.live_window_s)
    run_stage(config, set_, as_json, stage, render.live)


@app.command()
def outcomes(config: ConfigOpt, input: Annotated[str, typer.Option("--input", help="Parquet, CSV or JSON-lines file: "
                                                                    "request_id, label, optionally index")],
             set_: SetOpt = None, as_json: JsonOpt = False) -> None:
    """Bring true labels for earlier answers, as POST /outcomes does: valid rows into the outcome
    log, the others into its quarantine with the row and the reason."""
    def stage(cfg, storage):
        from rayline.serve.live_logs import load_outcomes

        logs, label = _live_logs(cfg, storage)
        return load_outcomes(logs, input, label.task, label.classes, time.time())
    run_stage(config, set_, as_json, stage)


@app.command("watch")
def watch_cmd(config: ConfigOpt, set_: SetOpt = None, address: AddressOpt = None,
              once: Annotated[bool, typer.Option("--once", help="one look (and its actions), then exit: for a cron job")] = False,
              dry_run: Annotated[bool, typer.Option("--dry-run", help="say what it would do and why; change nothing")] = False,
              as_json: JsonOpt = False) -> None:
    """The closed loop, per the config's watch section: on drift, new data, a schedule or a live
    metric falling: retrain -> offline gate -> canary -> promote, or roll back; every step in the
    journal, the alias history and MLflow. Runs on the cluster that serves (default: the running one)."""
    from rayline.watch import watch

    def stage(cfg, storage):
        from rayline import layout

        steps = watch(cfg, storage, once=once or dry_run, dry_run=dry_run, progress=progress)
        return {"steps": steps, "journal": storage.uri(layout.watch_journal(cfg.name, cfg.serve.app_name))}
    run_stage(config, set_, as_json, stage, render.watch, ray=True, address=address or "auto")


@app.command()
def predict(config: ConfigOpt, input: Annotated[str, typer.Option("--input", help="file or directory of records")],
            output: Annotated[str, typer.Option("--output", help="output directory (predictions/ and quarantine/)")],
            set_: SetOpt = None, address: AddressOpt = None, version: ModelOpt = None,
            format: Annotated[Optional[str], typer.Option("--format", help="parquet|csv|json (default: from the name)")] = None,
            delimiter: Annotated[Optional[str], typer.Option("--delimiter", help="a CSV input's field separator, e.g. ';' "
                                                             "(default: a tab for .tsv, else a comma)")] = None,
            encoding: Annotated[Optional[str], typer.Option("--encoding", help="a CSV input's text encoding, e.g. cp1252 "
                                                            "(default: UTF-8)")] = None,
            decimal: Annotated[Optional[str], typer.Option("--decimal", help="a CSV input's decimal mark: ',' for 3,14 "
                                                           "(with --delimiter ';'; default '.')")] = None,
            overwrite: Annotated[bool, typer.Option("--overwrite", help="replace an existing output (once the new one is complete)")] = False,
            explain: Annotated[bool, typer.Option("--explain", help="add each prediction's explanation as columns "
                                                  "(explain_base, explain_margin, explain__<field>), as /predict?explain=true")] = False,
            as_json: JsonOpt = False) -> None:
    """Batch inference with Ray Data; rows out + rows quarantined = rows in. Never writes into its input."""
    from rayline.batch import run_batch_predict

    run_stage(config, set_, as_json, lambda cfg, st: run_batch_predict(
        cfg, st, input, output, model=version, fmt=format, overwrite=overwrite, explain=explain,
        delimiter=delimiter, encoding=encoding, decimal=decimal).summary(),
        render.predicted, ray=True, address=address)
