"""How Ray Train's processes start for the xgboost family: XGBoost's collective and the loop's
entry, with xgboost imported rayline's way (`boosted.lean_imports`: without scikit-learn).

The collective is set up as Ray's `XGBoostConfig` sets it up: a RabitTracker in the Train
controller, its address and each worker's rank handed to the workers, and every worker's loop run
inside xgboost's `CommunicatorContext`. It is rayline's own because Ray's module imports xgboost at
its top: the controller and every worker imported it as soon as they unpickled the config, before
any rayline code ran there, and with scikit-learn installed (a dev install) that import cost
~0.5 s of CPU in each of the two processes on the path to the first round. One worker needs no
collective: then there is no tracker and no context.

Nothing here imports xgboost at import time: the driver imports this module and keeps xgboost's
own import (a notebook may use its estimators).
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass

from ray.train.backend import Backend, BackendConfig

from rayline.model import boosted

_communicator_args: dict = {}  # this worker's, set by the controller before its loop starts


def xgboost():
    """xgboost in a process Ray Train started for rayline (its controller, a worker)."""
    boosted.lean_imports()
    return boosted.xgboost_module()


def train_loop_per_worker(config: dict) -> None:
    """The worker's entry: xgboost imported rayline's way first, then the loop (whose module
    imports xgboost at its top, which then finds it loaded)."""
    xgboost()
    from rayline.train.boosted_loop import train_loop_per_worker as loop

    loop(config)


@dataclass
class RabitCollective(BackendConfig):
    """Ray Train backend config for the xgboost family (the DataParallelTrainer's `backend_config`)."""

    @property
    def backend_cls(self):
        return _RabitBackend

    @property
    def train_func_context(self):
        return _communicator


@contextmanager
def _communicator():
    args = dict(_communicator_args)
    if not args:  # one worker: xgboost trains alone
        yield
        return
    with xgboost().collective.CommunicatorContext(**args):
        yield


def _set_communicator_args(args: dict) -> None:
    import ray
    import ray.train

    _communicator_args.clear()
    if args:
        # XGBoost ranks its workers by task id (sortby="task"): the Ray Train rank orders them.
        rank = ray.train.get_context().get_world_rank()
        _communicator_args.update(args, dmlc_task_id=f"[xgboost.ray-rank={rank:08}]:"
                                                     f"{ray.get_runtime_context().get_actor_id()}")


class _RabitBackend(Backend):
    """Runs in the Train controller (Ray's Backend is a singleton there, one per run)."""

    def __init__(self):
        self._tracker_thread: threading.Thread | None = None

    def on_training_start(self, worker_group, backend_config: RabitCollective) -> None:
        import ray

        n = len(worker_group)
        args: dict = {}
        if n > 1:
            tracker = xgboost().tracker.RabitTracker(n_workers=n, host_ip=ray.util.get_node_ip_address(),
                                                     sortby="task")
            tracker.start()
            # worker_args() returns once the tracker listens; wait_for() serves the workers until done
            self._tracker_thread = threading.Thread(target=tracker.wait_for, daemon=True)
            self._tracker_thread.start()
            args = {"n_workers": n, **tracker.worker_args()}
        worker_group.execute(_set_communicator_args, args)  # also clears a restarted group's old args

    def on_shutdown(self, worker_group, backend_config: RabitCollective) -> None:
        if self._tracker_thread is not None:
            self._tracker_thread.join(timeout=5)
            self._tracker_thread = None
