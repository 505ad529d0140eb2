"""The CLI: exit codes, --json last line, --set overrides, clean error messages."""

import json
import os
import subprocess
import sys

from typer.testing import CliRunner

from rayline.cli import app
from tests.conftest import FLIGHTS_CONFIG, ROOT, save_yaml, small_config

runner = CliRunner()


def test_config_validate_and_show():
    r = runner.invoke(app, ["config", "validate", str(FLIGHTS_CONFIG)])
    assert r.exit_code == 0 and "valid" in r.output
    r = runner.invoke(app, ["config", "show", str(FLIGHTS_CONFIG), "--set", "train.epochs=2", "--json"])
    assert r.exit_code == 0
    last = json.loads(r.output.strip().splitlines()[-1])
    assert last["config"]["train"]["epochs"] == 2 and last["config"]["serve"]["port"] == 8000


def test_config_error_exit_code_and_message(tmp_path):
    r = runner.invoke(app, ["config", "validate", str(FLIGHTS_CONFIG), "--set", "train.lr=-1"])
    assert r.exit_code == 2
    assert "train.lr: Input should be greater than 0 (got -1)" in r.output
    assert "Traceback" not in r.output


def test_ingest_json_summary_in_process(ray_local, small_data, tmp_path):
    data, root = small_data
    cfg = save_yaml(small_config(data, root), tmp_path / "c.yaml")
    r = runner.invoke(app, ["ingest", "--config", str(cfg), "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output.strip().splitlines()[-1])
    assert summary["ok"] and summary["rows"]["read"] == 600 and not summary["reused"]
    r = runner.invoke(app, ["ingest", "--config", str(cfg)])
    assert r.exit_code == 0 and "(reused)" in r.output and "OK" in r.output


def test_ingest_bad_input_is_one_line_without_traceback(ray_local, small_data, tmp_path):
    data, root = small_data
    (data / "trips.csv").unlink()
    cfg = save_yaml(small_config(data, root), tmp_path / "c.yaml")
    r = runner.invoke(app, ["ingest", "--config", str(cfg), "--json"])
    assert r.exit_code == 1
    assert json.loads(r.output.strip().splitlines()[-1])["ok"] is False
    assert "trips.csv does not exist" in r.output and "Traceback" not in r.output


def test_console_script_runs_as_a_process(tmp_path):
    """The installed `rayline` entry point, in its own process (no Ray needed for config)."""
    exe = os.path.join(os.path.dirname(sys.executable), "rayline")
    r = subprocess.run([exe, "config", "validate", str(FLIGHTS_CONFIG), "--json"], capture_output=True, text=True,
                       cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["valid"] is True


def test_models_history_lists_every_alias_change(tmp_path):
    from rayline.registry import Registry, promote
    from rayline.storage import Storage

    root = tmp_path / "root"
    cfg = save_yaml(small_config(tmp_path, root), tmp_path / "c.yaml")
    reg = Registry(Storage(str(root)), "trips")
    for auc in (0.7, 0.6):
        reg.register({"weights.pt": b"w"}, {"metric": "auc", "mode": "max", "test": {"auc": auc}}, {"run_name": "r"})
    promote(reg, 1, "production")
    promote(reg, 2, "production", force=True)
    r = runner.invoke(app, ["models", "history", "--config", str(cfg)])
    assert r.exit_code == 0, r.output
    lines = r.output.strip().splitlines()
    assert "promote  -> version 1 (was None)" in lines[0] and "force    -> version 2 (was 1)  auc 0.6000" in lines[1]
    r = runner.invoke(app, ["models", "history", "--config", str(cfg), "--alias", "../x", "--json"])
    assert r.exit_code == 1 and "invalid alias name" in r.output


def test_a_terminal_gets_a_live_line_and_a_summary_table_other_outputs_plain_lines(monkeypatch):
    import io

    from rich.console import Console

    from rayline.cli import render, runner as cli_runner

    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=120)
    with cli_runner.live_display(True, console=console):
        cli_runner.progress("[ingest] ...")
        cli_runner.progress("train: epoch 1/3 val_auc 0.61")
    shown = screen.getvalue()
    assert "[ingest] ..." in shown and "train: epoch 1/3 val_auc 0.61" in shown  # each line kept above the spinner
    assert cli_runner._live is None
    # not a terminal, --json or --verbose: plain lines
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    monkeypatch.delenv("RAYLINE_VERBOSE", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    assert cli_runner.live_wanted(False) and not cli_runner.live_wanted(True)
    monkeypatch.setenv("RAYLINE_VERBOSE", "1")
    assert not cli_runner.live_wanted(False)

    summary = {"ingest": {"reused": True, "rows": {"read": 10, "clean": 9, "quarantined": 1, "train": 7, "valid": 1,
                                                   "test": 1}},
               "train": {"version": 3, "reused": False, "test": {"auc": 0.7123}, "report": "/r/report.md",
                         "tracking": {"run_id": "abc", "experiment": "flights", "uri": "sqlite:///x"}},
               "promote": {"alias": "production", "version": 3}, "deploy": {"url": "http://h:1", "model_version": 3},
               "smoke": {"status": 200, "predictions": [{"probability": 0.2, "label": 0}]}, "seconds": {"ingest": 1.0}}
    table = io.StringIO()
    render.pipeline(summary, console=Console(file=table, force_terminal=True, width=160))
    assert "rayline run" in table.getvalue() and "version 3: test auc 0.7123" in table.getvalue()
    lines = [f"{stage:<7} {text}" for stage, text in render.pipeline_rows(summary)]
    assert lines[0].startswith("ingest  reused: 10 rows") and lines[3] == "mlflow  run abc in experiment 'flights' at sqlite:///x"


def test_lookups_publish_in_process(ray_local, small_data, tmp_path):
    data, root = small_data
    cfg = save_yaml(small_config(data, tmp_path / "root"), tmp_path / "c.yaml")
    r = runner.invoke(app, ["lookups", "publish", "--config", str(cfg), "--json"])
    assert r.exit_code == 0, r.output
    first = json.loads(r.output.strip().splitlines()[-1])
    assert first["ok"] and first["snapshot"] and not first["reused"] and first["tables"]["stations"]["read"] == 3
    again = json.loads(runner.invoke(app, ["lookups", "publish", "--config", str(cfg), "--json"]).output.strip().splitlines()[-1])
    assert again["snapshot"] == first["snapshot"] and again["reused"]
