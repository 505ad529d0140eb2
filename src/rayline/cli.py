"""`rayline ...`: a thin shell over the stage functions.

Every command that takes --config also takes repeatable --set dotted.key=value overrides and
--json, which makes its final summary one JSON object on the last line of stdout. Errors meant
for the user (RaylineError) print one message and exit non-zero, without a traceback.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Annotated, Any, Optional

import typer

from rayline.errors import RaylineError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="rayline: an ML pipeline on one Ray cluster.")
config_app = typer.Typer(no_args_is_help=True, help="Validate and show pipeline configs.")
data_app = typer.Typer(no_args_is_help=True, help="Data utilities.")
models_app = typer.Typer(no_args_is_help=True, help="The model registry: list, show, promote, rollback.")
app.add_typer(config_app, name="config")
app.add_typer(data_app, name="data")
app.add_typer(models_app, name="models")


@app.callback()
def _global(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="also show Ray's, Ray Data's and Serve's "
                                                  "own logs (default: in the session's log files)")] = False) -> None:
    if verbose:
        os.environ["RAYLINE_VERBOSE"] = "1"

ConfigOpt = Annotated[str, typer.Option("--config", "-c", help="pipeline YAML file")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="override: dotted.key=value (repeatable)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print the final summary as one JSON line")]
AddressOpt = Annotated[Optional[str], typer.Option("--address", help="Ray cluster address (default: embedded local Ray)")]


def _run(fn: Callable[[], Any], as_json: bool, render: Callable[[Any], None] | None = None) -> None:
    """Run a command body; print its summary; map errors to clean messages and exit codes."""
    try:
        summary = fn()
    except RaylineError as e:
        typer.echo(f"error: {e}", err=True)
        if as_json:
            typer.echo(json.dumps({"ok": False, "error": str(e)}))
        raise typer.Exit(e.exit_code) from None
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(130) from None
    except Exception as e:  # noqa: BLE001 - last line of defence for a CLI
        if os.environ.get("RAYLINE_DEBUG"):
            traceback.print_exc()
        typer.echo(f"internal error: {type(e).__name__}: {e}\n(set RAYLINE_DEBUG=1 for the traceback)", err=True)
        if as_json:
            typer.echo(json.dumps({"ok": False, "error": f"{type(e).__name__}: {e}"}))
        raise typer.Exit(1) from None
    if summary is None:
        return
    if as_json:
        sys.stdout.flush()
        typer.echo(json.dumps({"ok": True, **summary}, default=str))
    elif render is not None:
        render(summary)
    else:
        typer.echo(json.dumps(summary, indent=2, default=str))


def _load(config: str, overrides: list[str] | None):
    from rayline.config import load_config

    return load_config(config, overrides or [])


# ------------------------------------------------------------------ config
@config_app.command("validate")
def config_validate(file: str, set_: SetOpt = None, as_json: JsonOpt = False) -> None:
    """Check a config file; exit 2 with the field, value and what is allowed if it is invalid."""
    def body():
        cfg = _load(file, set_)
        return {"config": file, "name": cfg.name, "valid": True, "config_hash": cfg.config_hash()}
    _run(body, as_json, lambda s: typer.echo(f"{file}: valid (pipeline {s['name']!r}, hash {s['config_hash']})"))


@config_app.command("show")
def config_show(file: str, set_: SetOpt = None, as_json: JsonOpt = False) -> None:
    """Print the fully resolved config, defaults included."""
    from rayline.config import dump_config

    def body():
        cfg = _load(file, set_)
        if not as_json:
            typer.echo(dump_config(cfg), nl=False)
            return None
        return {"config": cfg.model_dump(mode="json")}
    _run(body, as_json)


# ------------------------------------------------------------------ data
@app.command()
def ingest(config: ConfigOpt, set_: SetOpt = None, address: AddressOpt = None, force: bool = False,
           as_json: JsonOpt = False) -> None:
    """Read, join, validate, split and preprocess the data of a config (reused when unchanged)."""
    from rayline.data import run_ingest
    from rayline.runtime import ray_session
    from rayline.storage import Storage

    def body():
        cfg = _load(config, set_)
        with ray_session(address):
            result = run_ingest(cfg, Storage(cfg.storage.root), force=force, progress=_progress)
        return result.summary()
    _run(body, as_json, _render_ingest)


def _progress(msg: str) -> None:
    typer.echo(msg, err=True)


def _render_ingest(s: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    rows = s["rows"]
    t = Table(title=f"ingest {s['key']}" + (" (reused)" if s["reused"] else ""))
    t.add_column("rows")
    t.add_column("count", justify="right")
    for k in ("read", "clean", "quarantined", "train", "valid", "test"):
        t.add_row(k, f"{rows.get(k, 0):,}")
    for rule, n in s["quarantine_by_rule"].items():
        t.add_row(f"  quarantined {rule}", f"{n:,}")
    total = s["timings_s"].get("total")
    if total:
        t.add_row("time (s)", f"{total:.1f}")
        t.add_row("throughput (rows/s)", f"{rows['read'] / total:,.0f}")
    Console().print(t)
    ok = rows["read"] == rows["clean"] + rows["quarantined"]
    typer.echo(f"rows read {rows['read']:,} = clean {rows['clean']:,} + quarantined {rows['quarantined']:,}: "
               f"{'OK' if ok else 'MISMATCH'}")
    typer.echo(f"output: {s['path']}")


@data_app.command("synth")
def data_synth(rows: Annotated[int, typer.Option("--rows", help="rows to write")],
               out: Annotated[str, typer.Option("--out", help="output directory or URI")],
               shard_rows: int = 1_000_000, seed: int = 0, as_json: JsonOpt = False) -> None:
    """Write a flights-like Parquet data set of any size (streamed shard by shard)."""
    from rayline.data.synth import synth_flights

    def body():
        r = synth_flights(rows, out, shard_rows=shard_rows, seed=seed)
        return {"rows": r.rows, "shards": r.shards, "path": r.path, "seconds": round(r.seconds, 2)}
    _run(body, as_json, lambda s: typer.echo(f"wrote {s['rows']:,} rows in {s['shards']} shard(s) to {s['path']} "
                                             f"in {s['seconds']}s"))


# ------------------------------------------------------------------ training and registry
@app.command()
def train(config: ConfigOpt, set_: SetOpt = None, address: AddressOpt = None,
          run_name: Annotated[Optional[str], typer.Option("--run-name", help="resume/identify a run")] = None,
          fresh: Annotated[bool, typer.Option("--fresh", help="start over instead of resuming")] = False,
          as_json: JsonOpt = False) -> None:
    """Train with Ray Train (resuming a run of the same name), evaluate on test, register."""
    from rayline.pipeline import train_and_register
    from rayline.runtime import ray_session
    from rayline.storage import Storage

    def body():
        cfg = _load(config, set_)
        t0 = time.perf_counter()
        with ray_session(address):
            out = train_and_register(cfg, Storage(cfg.storage.root), run_name=run_name, fresh=fresh, progress=_progress)
        return {**out.summary(), "seconds": round(time.perf_counter() - t0, 1)}
    _run(body, as_json, _render_train)


def _render_train(s: dict) -> None:
    test = ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in s["test"].items())
    typer.echo(f"model version {s['version']}{' (reused: data and config unchanged)' if s['reused'] else ''}")
    typer.echo(f"test: {test}")
    if "training" in s:
        tr = s["training"]
        typer.echo(f"training: {tr['epochs_run']} epoch(s), best epoch {tr['best_epoch']}, {tr['workers']} worker(s) "
                   f"on {tr['device']}, feed {tr['feed']} (on {tr.get('feed_device', tr['device'])}, {tr.get('precision', 'fp32')})")
    typer.echo(f"time: {s['seconds']}s")
    typer.echo(f"report: {s['report']}")
    _echo_tracking(s.get("tracking"))


def _echo_tracking(t: dict | None, label: str = "mlflow: ") -> None:
    if t:
        typer.echo(f"{label}run {t['run_id']} in experiment {t['experiment']!r} at {t['uri']}")


@app.command()
def tune(config: ConfigOpt, set_: SetOpt = None, address: AddressOpt = None,
         trials: Annotated[Optional[int], typer.Option("--trials", min=1, help="trials (default: tune.trials)")] = None,
         fresh: Annotated[bool, typer.Option("--fresh", help="start over instead of resuming")] = False,
         promote: Annotated[bool, typer.Option("--promote/--no-promote",
                                               help="promote the best through the gate to the config's alias")] = True,
         as_json: JsonOpt = False) -> None:
    """Tune training with Ray Tune (ASHA); register the best trial, resuming a killed run."""
    from rayline.pipeline import tune_and_register
    from rayline.runtime import ray_session
    from rayline.storage import Storage

    def body():
        cfg = _load(config, set_)
        with ray_session(address):
            out = tune_and_register(cfg, Storage(cfg.storage.root), trials=trials, fresh=fresh,
                                    promote_to=cfg.alias if promote else None, progress=_progress)
        return out.summary()
    _run(body, as_json, _render_tune)


def _render_tune(s: dict) -> None:
    typer.echo(f"experiment {s['name']}{' (resumed)' if s['restored'] else ''}: {s['uri']}")
    keys = sorted({k for t in s["trials"] for k in t["params"]})
    short = [k.rsplit(".", 1)[-1] for k in keys]
    typer.echo(f"{'rank':<5}{'trial':<14}{'score':>9}{'reports':>8}  " + "  ".join(f"{k:>12}" for k in short))
    for i, t in enumerate(s["trials"], 1):
        score = f"{t['score']:.4f}" if isinstance(t["score"], (int, float)) else "-"
        vals = "  ".join(f"{_short(t['params'].get(k)):>12}" for k in keys)
        typer.echo(f"{i:<5}{str(t['trial_id']):<14}{score:>9}{t['reports']:>8}  {vals}  {t['status']}")
    test = ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in s["test"].items())
    typer.echo(f"best: trial {s['best_trial']['trial_id']} -> model version {s['version']}"
               f"{' (already registered)' if s['reused'] else ''}; test: {test}")
    if s["promotion"]:
        p = s["promotion"]
        typer.echo(f"promotion: refused: {p['refused']}" if "refused" in p else
                   f"promotion: {p['alias']} -> version {p['version']} (was {p['previous']})")
    typer.echo(f"time: {s['seconds']}s; report: {s['report']}")
    _echo_tracking(s.get("tracking"))


def _short(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


@app.command()
def evaluate(config: ConfigOpt, set_: SetOpt = None,
             version: Annotated[Optional[str], typer.Option("--version", help="number, alias or latest")] = None,
             as_json: JsonOpt = False) -> None:
    """Recompute metrics and the report of a registered version on its test split."""
    from rayline.pipeline import evaluate_version
    from rayline.storage import Storage

    def body():
        cfg = _load(config, set_)
        return evaluate_version(cfg, Storage(cfg.storage.root), version)
    _run(body, as_json, lambda s: typer.echo(f"version {s['version']}: test {s['metric']} {s['value']:.4f}\nreport: {s['report']}"))


def _registry(config: str, set_: list[str] | None):
    from rayline.registry import Registry
    from rayline.storage import Storage

    cfg = _load(config, set_)
    return cfg, Storage(cfg.storage.root), Registry(Storage(cfg.storage.root), cfg.name)


@models_app.command("list")
def models_list(config: ConfigOpt, set_: SetOpt = None, as_json: JsonOpt = False) -> None:
    """Versions with their test metric and aliases."""
    def body():
        _, _, reg = _registry(config, set_)
        aliases = reg.aliases()
        rows = []
        for v in reg.versions():
            mv = reg.get(v)
            rows.append({**mv.summary(), "aliases": sorted(a for a, x in aliases.items() if x == v)})
        return {"model": reg.name, "versions": rows, "aliases": aliases}

    def render(s):
        from rich.console import Console
        from rich.table import Table

        t = Table(title=f"model {s['model']}")
        for c in ("version", "aliases", "test metric", "run"):
            t.add_column(c)
        for r in s["versions"]:
            m = r["metric"]
            t.add_row(str(r["version"]), ",".join(r["aliases"]), f"{m} {r['test'].get(m, float('nan')):.4f}", str(r["run_name"]))
        Console().print(t)
    _run(body, as_json, render)


@models_app.command("show")
def models_show(version: str, config: ConfigOpt, set_: SetOpt = None, as_json: JsonOpt = False) -> None:
    """Metrics and lineage of one version (a number, an alias or latest)."""
    def body():
        _, _, reg = _registry(config, set_)
        mv = reg.get(reg.resolve(version))
        return {"version": mv.version, "uri": mv.uri, "metrics": mv.metrics, "lineage": mv.lineage,
                "aliases": sorted(a for a, x in reg.aliases().items() if x == mv.version)}
    _run(body, as_json)


@models_app.command("history")
def models_history(config: ConfigOpt, set_: SetOpt = None, alias: Annotated[str, typer.Option("--alias")] = "production",
                   as_json: JsonOpt = False) -> None:
    """Every change of an alias: version, previous, promote/force/rollback, metrics compared, when."""
    def body():
        _, _, reg = _registry(config, set_)
        return {"alias": alias, "changes": reg.alias_log(alias)}

    def render(s):
        for e in s["changes"]:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(e["updated_unix"]))
            typer.echo(f"{e['seq']:>4}  {when}Z  {e['event']:<8} -> version {e['version']} (was {e['previous']})"
                       + (f"  {e['metric']} {e['value']:.4f}" if "value" in e else ""))
    _run(body, as_json, render)


@models_app.command("promote")
def models_promote(version: str, config: ConfigOpt, set_: SetOpt = None,
                   alias: Annotated[str, typer.Option("--alias")] = "production",
                   force: Annotated[bool, typer.Option("--force", help="promote even if worse than the current one")] = False,
                   as_json: JsonOpt = False) -> None:
    """Point an alias at a version, refused if it is worse than the current one beyond tolerance."""
    from rayline.pipeline import promote_version

    def body():
        cfg, storage, _ = _registry(config, set_)
        return promote_version(cfg, storage, version, alias, force)
    _run(body, as_json, lambda s: typer.echo(
        f"{s['alias']} -> version {s['version']} (was {s['previous']}; {s['metric']} {s['candidate_value']:.4f}"
        + (f" vs {s['previous_value']:.4f}" if s["previous_value"] is not None else "") + ")"))


@models_app.command("rollback")
def models_rollback(config: ConfigOpt, set_: SetOpt = None, alias: Annotated[str, typer.Option("--alias")] = "production",
                    as_json: JsonOpt = False) -> None:
    """Point an alias back at the version it had before."""
    from rayline.pipeline import rollback_alias

    def body():
        cfg, storage, _ = _registry(config, set_)
        return rollback_alias(cfg, storage, alias)
    _run(body, as_json, lambda s: typer.echo(f"{s['alias']}: version {s['from']} -> {s['to']}"))


# ------------------------------------------------------------------ the whole pipeline
@app.command()
def run(config: ConfigOpt, set_: SetOpt = None, address: AddressOpt = None,
        fresh: Annotated[bool, typer.Option("--fresh", help="retrain even if data and config are unchanged")] = False,
        keep_serving: Annotated[bool, typer.Option("--keep-serving", help="keep the endpoint up until Ctrl-C")] = False,
        as_json: JsonOpt = False) -> None:
    """ingest -> train -> evaluate -> register -> promote -> deploy -> smoke request."""
    from rayline.pipeline import run_pipeline
    from rayline.runtime import ray_session
    from rayline.serve.ingress import ingress_env
    from rayline.storage import Storage

    def body():
        cfg = _load(config, set_)
        with ray_session(address, env=ingress_env(cfg.serve)):
            result = run_pipeline(cfg, Storage(cfg.storage.root), fresh=fresh,
                                  progress=_progress)
            if keep_serving:
                typer.echo(f"serving at {result.stages['deploy']['url']}; Ctrl-C stops", err=True)
                _serve_until_stopped(cfg.serve.app_name)
        return result.summary()
    _run(body, as_json, _render_run)


def _render_run(s: dict) -> None:
    ing, tr, dep = s["ingest"], s["train"], s["deploy"]
    rows = ing["rows"]
    typer.echo(f"ingest  {'reused' if ing['reused'] else 'ran'}: {rows['read']:,} rows, {rows['clean']:,} clean, "
               f"{rows['quarantined']:,} quarantined; train/valid/test {rows['train']:,}/{rows['valid']:,}/{rows['test']:,}")
    test = ", ".join(f"{k} {v:.4f}" for k, v in tr["test"].items() if isinstance(v, float))
    typer.echo(f"model   version {tr['version']}{' (reused)' if tr['reused'] else ''}: test {test}")
    typer.echo(f"report  {tr['report']}")
    _echo_tracking(tr.get("tracking"), "mlflow  ")
    promo = s["promote"]
    typer.echo("promote " + (f"refused: {promo['refused']}" if "refused" in promo else f"{promo['alias']} -> version {promo['version']}"))
    typer.echo(f"deploy  {dep['url']} serving version {dep['model_version']}")
    typer.echo(f"smoke   HTTP {s['smoke']['status']}: {s['smoke']['predictions'][0]}")
    typer.echo("time    " + ", ".join(f"{k} {v:.1f}s" for k, v in s["seconds"].items())
               + f"; total {sum(s['seconds'].values()):.1f}s")


# ------------------------------------------------------------------ serving
ModelOpt = Annotated[Optional[str], typer.Option("--version", help="model version or alias (default: the config's alias)")]


@app.command("serve")
def serve_cmd(config: ConfigOpt, set_: SetOpt = None, address: AddressOpt = None, version: ModelOpt = None,
              as_json: JsonOpt = False) -> None:
    """Deploy the endpoint (embedded local Ray unless --address) and serve until Ctrl-C."""
    from rayline.runtime import ray_session
    from rayline.serve.deploy import deploy
    from rayline.serve.ingress import ingress_env

    def body():
        cfg = _load(config, set_)
        with ray_session(address, env=ingress_env(cfg.serve)):
            d = deploy(cfg, version)
            typer.echo(json.dumps(d.summary()) if as_json else
                       f"serving {cfg.name} version {d.model_version} at {d.url} (docs: {d.url}/docs); Ctrl-C stops")
            _serve_until_stopped(cfg.serve.app_name)
        return None
    _run(body, as_json)


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

    t0 = time.perf_counter()
    serve.delete(app_name)
    typer.echo(f"stopped: {app_name} drained in {time.perf_counter() - t0:.1f}s", err=True)


@app.command("deploy")
def deploy_cmd(config: ConfigOpt, set_: SetOpt = None, address: AddressOpt = None, version: ModelOpt = None,
               as_json: JsonOpt = False) -> None:
    """Deploy or update the endpoint on a running cluster (a version change reconfigures live replicas)."""
    from rayline.runtime import ray_session
    from rayline.serve.deploy import deploy

    def body():
        cfg = _load(config, set_)
        with ray_session(address or "auto"):
            return deploy(cfg, version).summary()
    _run(body, as_json, lambda s: typer.echo(f"{s['app']}: version {s['model_version']} at {s['url']}"))


@app.command("serve-config")
def serve_config_cmd(config: ConfigOpt, set_: SetOpt = None, version: ModelOpt = None) -> None:
    """Print the Serve config (for `serve deploy`, or a RayService's serveConfigV2), with the
    resolved config inside it: the cluster needs no copy of the config file."""
    import yaml

    from rayline.serve.deploy import serve_config

    def body():
        cfg = _load(config, set_)
        typer.echo(yaml.safe_dump(serve_config(cfg, version), sort_keys=False), nl=False)
    _run(body, False)


@app.command()
def predict(config: ConfigOpt, input: Annotated[str, typer.Option("--input", help="file or directory of records")],
            output: Annotated[str, typer.Option("--output", help="output directory (predictions/ and quarantine/)")],
            set_: SetOpt = None, address: AddressOpt = None, version: ModelOpt = None,
            format: Annotated[Optional[str], typer.Option("--format", help="parquet|csv|json (default: from the name)")] = None,
            overwrite: Annotated[bool, typer.Option("--overwrite", help="replace an existing output (once the new one is complete)")] = False,
            as_json: JsonOpt = False) -> None:
    """Batch inference with Ray Data; rows out + rows quarantined = rows in. Never writes into its input."""
    from rayline.batch import run_batch_predict
    from rayline.runtime import ray_session
    from rayline.storage import Storage

    def body():
        cfg = _load(config, set_)
        with ray_session(address):
            return run_batch_predict(cfg, Storage(cfg.storage.root), input, output, model=version, fmt=format,
                                     overwrite=overwrite).summary()
    _run(body, as_json, lambda s: typer.echo(
        f"version {s['version']}: rows in {s['rows_in']:,} = predicted {s['rows_out']:,} + quarantined {s['quarantined']:,}"
        f"\noutput: {s['output']} ({s['seconds']}s)"))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
