"""Every Ray internal rayline relies on (rayline/ray_compat.py), checked against the installed Ray.

A failure names the hook that moved: after a Ray upgrade, fix ray_compat.py (and this map of
where Ray reads each switch) before anything else."""

import importlib
import importlib.util
import inspect
from pathlib import Path

import pytest

from rayline import ray_compat as rc

# where the installed Ray reads each environment switch (or names the template/callback)
READ_IN = {
    rc.TRAIN_CONTROLLER_POLL: "ray.train.v2._internal.constants",
    rc.TRAIN_PREEMPTION_WATCHER: "ray.train.v2._internal.constants",
    rc.SERVE_HAPROXY: "ray.serve._private.constants",
    rc.SERVE_USER_CODE_THREAD: "ray.serve._private.constants",
    rc.SERVE_HAPROXY_RETRY_ON: "ray.serve._private.constants",
    rc.SERVE_HAPROXY_ERROR_LIMIT: "ray.serve._private.constants",
    rc.SERVE_DRAINING_PERIOD: "ray.serve._private.constants",
    rc.SERVE_HAPROXY_STATS_PORT: "ray.serve._private.constants",
    rc.SERVE_HAPROXY_METRICS_PORT: "ray.serve._private.constants",
    rc.SERVE_HAPROXY_BINARY: "ray.serve._private.constants",
    rc.SERVE_HAPROXY_FRONTEND: "ray.serve._private.haproxy_templates",
    rc.DATA_PARQUET_FOOTER_ACTORS: "ray.data._internal.datasource_v2.formats.parquet.footer_file_indexer",
}


def _source(module: str) -> str:
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin, f"Ray module {module} is gone"
    return Path(spec.origin).read_text()


def test_every_switch_is_mapped():
    assert set(rc.ENV_SWITCHES) | {rc.SERVE_HAPROXY_FRONTEND} == set(READ_IN)


@pytest.mark.parametrize("name", sorted(READ_IN))
def test_ray_still_reads_the_switch(name):
    assert name in _source(READ_IN[name]), \
        f"ray_compat hook {name!r}: no longer in {READ_IN[name]} (Ray upgraded? see rayline/ray_compat.py)"


def test_private_apis_exist():
    import ray

    assert hasattr(ray._private.worker, "_global_node"), "ray_compat.global_node: ray._private.worker._global_node is gone"
    assert hasattr(ray._private.worker.global_worker, "node"), "ray_compat.session_dir: global_worker.node is gone"
    from ray._private.node import Node

    assert hasattr(Node, "get_session_dir_path"), "ray_compat.session_dir: Node.get_session_dir_path is gone"
    from ray._private import state

    assert callable(getattr(state, "available_resources_per_node", None)) and \
        callable(getattr(state, "total_resources_per_node", None)), \
        "ray_compat.cpus_per_node: ray._private.state's *_resources_per_node are gone"
    api = importlib.import_module("ray.serve._private.api")
    params = inspect.signature(api.serve_start).parameters
    assert {"http_options", "proxy_location", "grpc_options"} <= set(params), \
        f"ray_compat.serve_start: ray.serve._private.api.serve_start takes {list(params)}"


def test_data_parallel_trainer_takes_a_backend_config():
    params = inspect.signature(rc.data_parallel_trainer().__init__).parameters
    assert "backend_config" in params, f"ray_compat.data_parallel_trainer: DataParallelTrainer takes {list(params)}"


def test_default_callbacks_hook():
    from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

    assert callable(getattr(DataParallelTrainer, "_create_default_callbacks", None)), \
        "ray_compat.without_default_callbacks: DataParallelTrainer._create_default_callbacks is gone"
    src = inspect.getsource(DataParallelTrainer._create_default_callbacks)
    for name in (rc.TRAIN_DATASETS_CALLBACK, rc.TRAIN_PG_CLEANER_CALLBACK):
        assert name in src, f"ray_compat: Ray Train no longer creates {name} by default"


def test_lean_trainer_keeps_the_class_name():
    from ray.train.torch import TorchTrainer

    lean = rc.without_default_callbacks(TorchTrainer, frozenset({rc.TRAIN_DATASETS_CALLBACK}))
    assert lean.__name__ == "TorchTrainer" and issubclass(lean, TorchTrainer)
    assert rc.without_default_callbacks(TorchTrainer, frozenset()) is TorchTrainer


def test_importing_ray_compat_imports_no_ray():
    import subprocess
    import sys

    code = "import sys, rayline.ray_compat; print(any(m == 'ray' or m.startswith('ray.') for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_an_embedded_ray_lists_parquet_with_a_footer_reader_per_core():
    from rayline.runtime import embedded_env

    assert [embedded_env(n)[rc.DATA_PARQUET_FOOTER_ACTORS] for n in (1, 2, 8, 64)] == ["2", "2", "8", "32"]
