"""How many training workers, with what each: decided from the config and what the cluster has.

`use_gpu: auto` must work on any machine: a laptop (no GPU), a one-GPU workstation (the default
`num_workers: 2` would ask for two GPUs and Ray Train would wait for them forever) and a
multi-GPU cluster. So the plan is made from the cluster's resources before the trainer starts,
and a request the cluster can never meet is an error that says what was asked and what exists.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from rayline.config import TrainConfig
from rayline.errors import ResourceError


@dataclass(frozen=True)
class WorkerPlan:
    workers: int
    use_gpu: bool
    resources: dict  # per worker
    note: str = ""  # why the plan differs from the config, if it does

    @property
    def device(self) -> str:
        return "cuda" if self.use_gpu else "cpu"


def plan_workers(tc: TrainConfig, total_cpus: float, total_gpus: float) -> WorkerPlan:
    """Pure: the worker group for a cluster with these totals, or an ResourceError."""
    want = tc.num_workers
    if tc.use_gpu == "auto":
        if total_gpus >= 1:
            workers = min(want, int(total_gpus))
            note = "" if workers == want else (f"train.num_workers={want} but the cluster has {total_gpus:g} GPU(s): "
                                               f"training on {workers} GPU worker(s)")
            return _check_cpus(WorkerPlan(workers, True, {"CPU": tc.cpus_per_worker, "GPU": 1}, note), total_cpus)
        return _check_cpus(WorkerPlan(want, False, {"CPU": tc.cpus_per_worker}), total_cpus)
    if tc.use_gpu:
        if total_gpus < want:
            raise ResourceError(f"train.use_gpu=true with train.num_workers={want} needs {want} GPU(s), one per worker, "
                             f"but the cluster has {total_gpus:g}: set train.num_workers<={int(total_gpus)} "
                             f"or train.use_gpu=auto" + ("" if total_gpus else " (or false)"))
        return _check_cpus(WorkerPlan(want, True, {"CPU": tc.cpus_per_worker, "GPU": 1}), total_cpus)
    return _check_cpus(WorkerPlan(want, False, {"CPU": tc.cpus_per_worker}), total_cpus)


def _check_cpus(plan: WorkerPlan, total_cpus: float) -> WorkerPlan:
    need = plan.workers * plan.resources["CPU"]
    if need > total_cpus + 1e-9:
        raise ResourceError(f"train.num_workers={plan.workers} x train.cpus_per_worker={plan.resources['CPU']:g} needs "
                         f"{need:g} CPU(s) but the cluster has {total_cpus:g}: lower train.num_workers or "
                         f"train.cpus_per_worker")
    return plan


def cluster_worker_plan(tc: TrainConfig, progress=lambda m: None) -> WorkerPlan:
    """The plan for the connected cluster. On an autoscaling cluster nodes may still be coming:
    `train.resource_wait_s` keeps re-checking for that long before the error stands."""
    import ray

    deadline = time.monotonic() + tc.resource_wait_s
    while True:
        res = ray.cluster_resources()
        try:
            plan = plan_workers(tc, res.get("CPU", 0.0), res.get("GPU", 0.0))
        except ResourceError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(2.0)
            continue
        if plan.note:
            progress(f"train: {plan.note}")
        return plan
