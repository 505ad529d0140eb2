"""The notebooks run top to bottom against the test session's cluster (RAY_ADDRESS), on a small config."""

import os

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import ROOT, SERVE_PORT, save_yaml, small_config

NOTEBOOKS = ["01-explore-data", "02-train-on-the-cluster", "03-serve-and-monitor", "04-compare-runs", "05-closed-loop"]


@pytest.fixture(scope="module")
def notebook_env(ray_local, tmp_path_factory):
    import ray

    from tests.conftest import small_tables, write_tables

    base = tmp_path_factory.mktemp("notebooks")
    write_tables(small_tables(800), base / "data")
    raw = small_config(base / "data", base / "root")
    raw["serve"] = {"port": SERVE_PORT, "cpus_per_replica": 0.25, "model_poll_s": 1,
                    "autoscaling": {"min_replicas": 1, "max_replicas": 1}}
    cfg = save_yaml(raw, base / "small.yaml")
    return {**os.environ, "RAYLINE_CONFIG": str(cfg), "RAYLINE_SET": "",
            "RAY_ADDRESS": ray.get_runtime_context().gcs_address,
            "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "token")}


def test_notebooks_are_committed_without_outputs():
    for name in NOTEBOOKS:
        nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert code and all(not c.outputs and c.execution_count is None for c in code), name
        assert any("from rayline" in c.source for c in code), name


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_top_to_bottom(notebook_env, name, monkeypatch):
    for k, v in notebook_env.items():
        monkeypatch.setenv(k, v)
    nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    client = NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT / "notebooks")}})
    try:
        client.execute()
    finally:
        if name.startswith("03"):
            from ray import serve

            serve.delete("rayline")
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
