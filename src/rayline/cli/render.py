"""How each command's summary reads on a terminal (`--json` prints the summary itself)."""

from __future__ import annotations

import sys
import time

import typer


def ingest(s: dict) -> None:
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


def synth(s: dict) -> None:
    typer.echo(f"wrote {s['rows']:,} rows in {s['shards']} shard(s) to {s['path']} in {s['seconds']}s")


def _test(metrics: dict, floats_only: bool = False) -> str:
    return ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items()
                     if isinstance(v, float) or not floats_only)


def tracking(t: dict | None, label: str = "mlflow: ") -> None:
    if t:
        typer.echo(f"{label}run {t['run_id']} in experiment {t['experiment']!r} at {t['uri']}")


def train(s: dict) -> None:
    typer.echo(f"model version {s['version']}{' (reused: data and config unchanged)' if s['reused'] else ''}")
    typer.echo(f"test: {_test(s['test'])}")
    if "training" in s:
        tr = s["training"]
        typer.echo(f"training: {tr['epochs_run']} epoch(s), best epoch {tr['best_epoch']}, {tr['workers']} worker(s) "
                   f"x {tr.get('cpus_per_worker', 0):g} CPU on {tr['device']}, feed {tr['feed']} (on {tr.get('feed_device', tr['device'])}, {tr.get('precision', 'fp32')})")
    typer.echo(f"time: {s['seconds']}s")
    typer.echo(f"report: {s['report']}")
    tracking(s.get("tracking"))


def _short(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def tune(s: dict) -> None:
    typer.echo(f"experiment {s['name']}{' (resumed)' if s['restored'] else ''}: {s['uri']}")
    keys = sorted({k for t in s["trials"] for k in t["params"]})
    short = [k.rsplit(".", 1)[-1] for k in keys]
    typer.echo(f"{'rank':<5}{'trial':<14}{'score':>9}{'reports':>8}  " + "  ".join(f"{k:>12}" for k in short))
    for i, t in enumerate(s["trials"], 1):
        score = f"{t['score']:.4f}" if isinstance(t["score"], (int, float)) else "-"
        vals = "  ".join(f"{_short(t['params'].get(k)):>12}" for k in keys)
        typer.echo(f"{i:<5}{str(t['trial_id']):<14}{score:>9}{t['reports']:>8}  {vals}  {t['status']}")
    typer.echo(f"best: trial {s['best_trial']['trial_id']} -> model version {s['version']}"
               f"{' (already registered)' if s['reused'] else ''}; test: {_test(s['test'])}")
    if s["promotion"]:
        p = s["promotion"]
        typer.echo(f"promotion: refused: {p['refused']}" if "refused" in p else
                   f"promotion: {p['alias']} -> version {p['version']} (was {p['previous']})")
    typer.echo(f"time: {s['seconds']}s; report: {s['report']}")
    tracking(s.get("tracking"))


def evaluate(s: dict) -> None:
    typer.echo(f"version {s['version']}: test {s['metric']} {s['value']:.4f}\nreport: {s['report']}")


def models(s: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"model {s['model']}")
    for c in ("version", "aliases", "test metric", "run"):
        t.add_column(c)
    for r in s["versions"]:
        m = r["metric"]
        t.add_row(str(r["version"]), ",".join(r["aliases"]), f"{m} {r['test'].get(m, float('nan')):.4f}", str(r["run_name"]))
    Console().print(t)


def alias_history(s: dict) -> None:
    for e in s["changes"]:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(e["updated_unix"]))
        typer.echo(f"{e['seq']:>4}  {when}Z  {e['event']:<8} -> version {e['version']} (was {e['previous']})"
                   + (f"  {e['metric']} {e['value']:.4f}" if "value" in e else ""))


def promotion(s: dict) -> None:
    typer.echo(f"{s['alias']} -> version {s['version']} (was {s['previous']}; {s['metric']} {s['candidate_value']:.4f}"
               + (f" vs {s['previous_value']:.4f}" if s["previous_value"] is not None else "") + ")")


def rollback(s: dict) -> None:
    typer.echo(f"{s['alias']}: version {s['from']} -> {s['to']}")


def pipeline_rows(s: dict) -> list[tuple[str, str]]:
    """(stage, outcome) lines of `rayline run`'s summary."""
    ing, tr, dep, promo = s["ingest"], s["train"], s["deploy"], s["promote"]
    rows = ing["rows"]
    t = tr.get("tracking")
    out = [("ingest", f"{'reused' if ing['reused'] else 'ran'}: {rows['read']:,} rows, {rows['clean']:,} clean, "
                      f"{rows['quarantined']:,} quarantined; train/valid/test "
                      f"{rows['train']:,}/{rows['valid']:,}/{rows['test']:,}"),
           ("model", f"version {tr['version']}{' (reused)' if tr['reused'] else ''}: test {_test(tr['test'], True)}"),
           ("report", tr["report"])]
    if t:
        out.append(("mlflow", f"run {t['run_id']} in experiment {t['experiment']!r} at {t['uri']}"))
    out += [("promote", f"refused: {promo['refused']}" if "refused" in promo else
             f"{promo['alias']} -> version {promo['version']}"),
            ("deploy", f"{dep['url']} serving version {dep['model_version']}"),
            ("smoke", f"HTTP {s['smoke']['status']}: {s['smoke']['predictions'][0]}"),
            ("time", ", ".join(f"{k} {v:.1f}s" for k, v in s["seconds"].items())
             + f"; total {sum(s['seconds'].values()):.1f}s")]
    return out


def pipeline(s: dict, console=None) -> None:
    """A table at a terminal; elsewhere one `stage  outcome` line each, stable to grep."""
    rows = pipeline_rows(s)
    if console is None and not sys.stdout.isatty():
        for stage, text in rows:
            typer.echo(f"{stage:<7} {text}")
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title="rayline run", show_header=False, title_justify="left")
    t.add_column("stage", style="bold")
    t.add_column("outcome", overflow="fold")
    for stage, text in rows:
        t.add_row(stage, text)
    (console or Console()).print(t)


def deployed(s: dict) -> None:
    typer.echo(f"{s['app']}: version {s['model_version']} at {s['url']}")


def predicted(s: dict) -> None:
    typer.echo(f"version {s['version']}: rows in {s['rows_in']:,} = predicted {s['rows_out']:,} + quarantined "
               f"{s['quarantined']:,}\noutput: {s['output']} ({s['seconds']}s)")


def live(s: dict) -> None:
    """One line per version and role; outcome metrics where outcomes arrived."""
    typer.echo(f"live traffic, last {s['window_s']:,} s:")
    if not s["versions"]:
        typer.echo("  no answers logged in this window")
    for v in s["versions"]:
        lat = v.get("latency_ms", {})
        line = (f"  v{v['version']} {v['role']:<6} {v['requests']:>8,} requests  {v['error_rate']:.2%} errors"
                + (f"  p50 {lat['p50']:.1f} ms  p95 {lat['p95']:.1f} ms" if lat else ""))
        if v.get("auc") is not None:
            lo, hi = v["auc_ci95"]
            line += f"  AUC {v['auc']:.4f} [{lo:.4f}, {hi:.4f}] on {v['outcomes']:,} outcomes"
        elif v.get("rmse") is not None:
            line += f"  RMSE {v['rmse']:.4g} on {v['outcomes']:,} outcomes"
        elif v.get("accuracy") is not None:
            line += f"  accuracy {v['accuracy']:.4f} on {v['outcomes']:,} outcomes"
        typer.echo(line)
    for a in s["shadow_agreement"]:
        typer.echo(f"  shadow v{a['version']}: {a['label_agreement']:.2%} same label as v{a['against_versions']} "
                   f"on {a['records']:,} records (mean |score diff| {a['mean_abs_score_diff']:.4f})")


def watch(s: dict) -> None:
    """One line per step of the loop: what it did (or would do) and why."""
    for step in s["steps"]:
        tag = " (dry run)" if step.get("dry_run") else ""
        version = f" version {step['version']}" if step.get("version") else ""
        typer.echo(f"watch: {step['action']}{version}{tag}: {step.get('why', '')}")
        if step.get("then"):
            typer.echo(f"  then: {step['then']}")
        for t in step.get("triggers", []) if step.get("dry_run") else []:
            typer.echo(f"  trigger {t['trigger']}: {t['why']}")
    if s.get("journal"):
        typer.echo(f"journal: {s['journal']}")
