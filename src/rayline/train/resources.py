"""How many training workers, with what each: decided from the config and what the cluster has.

`use_gpu: auto` must work on any machine: a laptop (no GPU), a one-GPU workstation (a config
asking for two workers would ask for two GPUs and Ray Train would wait for them forever) and a
multi-GPU cluster. So the plan is made from the cluster's resources before the trainer starts,
and a request the cluster can never meet is an error that says what was asked and what exists.

`num_workers: auto` / `cpus_per_worker: auto` (the defaults) size the group from the CPUs each
node has free: on CPUs one worker per node, each with the cores its node has free (XGBoost and
torch are multithreaded, so on one node one worker with every core is as fast as a plain
process, where two workers on one node pay their collective's all-reduces); on GPUs one worker
per GPU with one CPU. Free, not total: a worker asking for cores a Serve replica holds would wait
for them forever.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Sequence

from rayline.config import TrainConfig
from rayline.errors import ResourceError

AUTO = "auto"
_STEPS = (0.5, 0.25)  # the fractional sizes tried below one CPU, largest first


@dataclass(frozen=True)
class WorkerPlan:
    workers: int
    use_gpu: bool
    resources: dict  # per worker
    note: str = ""  # why the plan differs from the config, if it does
    strategy: str = "PACK"  # the placement group's strategy

    @property
    def device(self) -> str:
        return "cuda" if self.use_gpu else "cpu"


def plan_workers(tc: TrainConfig, total_cpus: float, total_gpus: float, free_cpus: Sequence[float] = (),
                 reserve_cpus: float = 0.0) -> WorkerPlan:
    """Pure: the worker group for a cluster with these totals, or a ResourceError.

    `free_cpus`: each live node's free CPUs (what `auto` sizes from; default: one node with all of
    `total_cpus` free). `reserve_cpus`: CPUs per node an `auto` size leaves for others (Ray Data
    streaming the training split)."""
    free = [max(0.0, c - reserve_cpus) for c in (free_cpus or [total_cpus])]
    strategy = tc.placement_strategy if "placement_strategy" in tc.model_fields_set or tc.num_workers != AUTO \
        else "SPREAD"  # one worker per node
    if _use_gpu(tc, total_gpus):
        want = max(1, int(total_gpus)) if tc.num_workers == AUTO else tc.num_workers
        workers = min(want, int(total_gpus))
        note = "" if workers == want or tc.num_workers == AUTO else (
            f"train.num_workers={want} but the cluster has {total_gpus:g} GPU(s): training on {workers} GPU worker(s)")
        cpus = (_fit_cpus(free, workers, cap=1.0) if tc.cpus_per_worker == AUTO else tc.cpus_per_worker)
        return _check_cpus(WorkerPlan(workers, True, {"CPU": cpus, "GPU": 1}, note, strategy), total_cpus)
    if tc.num_workers == AUTO:
        if tc.cpus_per_worker == AUTO:
            workers, cpus = _one_per_node(free)
        else:
            workers = sum(1 for c in free if c >= tc.cpus_per_worker - 1e-9)
            if not workers:
                raise ResourceError(f"train.num_workers=auto with train.cpus_per_worker={tc.cpus_per_worker:g}: no node "
                                    f"has that many CPUs free (free per node: {_listing(free)}): lower "
                                    f"train.cpus_per_worker or set it to auto")
            cpus = tc.cpus_per_worker
        return WorkerPlan(workers, False, {"CPU": cpus}, strategy=strategy)
    cpus = _fit_cpus(free, tc.num_workers) if tc.cpus_per_worker == AUTO else tc.cpus_per_worker
    return _check_cpus(WorkerPlan(tc.num_workers, False, {"CPU": cpus}, strategy=strategy), total_cpus)


def _use_gpu(tc: TrainConfig, total_gpus: float) -> bool:
    if tc.use_gpu == "auto":
        return total_gpus >= 1
    if tc.use_gpu and tc.num_workers != AUTO and total_gpus < tc.num_workers:
        raise ResourceError(f"train.use_gpu=true with train.num_workers={tc.num_workers} needs {tc.num_workers} GPU(s), "
                            f"one per worker, but the cluster has {total_gpus:g}: set "
                            f"train.num_workers<={int(total_gpus)} or train.use_gpu=auto"
                            + ("" if total_gpus else " (or false)"))
    if tc.use_gpu and total_gpus < 1:
        raise ResourceError("train.use_gpu=true needs a GPU but the cluster has 0: set train.use_gpu=auto (or false)")
    return bool(tc.use_gpu)


def _one_per_node(free: list[float]) -> tuple[int, float]:
    """One worker on each node with a whole CPU free, all with the smallest such node's whole
    CPUs (a collective runs at its slowest member's pace); else one worker with what the
    freest node has, down to a quarter CPU."""
    whole = [math.floor(c + 1e-9) for c in free if c >= 1 - 1e-9]
    if whole:
        return len(whole), float(min(whole))
    return 1, _fit_cpus(free, 1)


def _fit_cpus(free: list[float], workers: int, cap: float | None = None) -> float:
    """The largest per-worker size (whole CPUs, else 0.5 or 0.25) that places `workers` workers on
    these nodes' free CPUs."""
    top = math.floor(max(free, default=0.0) + 1e-9)
    if cap is not None:
        top = min(top, int(cap))
    for size in [*range(top, 0, -1), *_STEPS]:
        if sum(math.floor(c / size + 1e-9) for c in free) >= workers:
            return float(size)
    raise ResourceError(f"train: {workers} worker(s) need at least {_STEPS[-1]:g} CPU each, but the nodes have "
                        f"{_listing(free)} CPU(s) free: lower train.num_workers, or wait for the running work "
                        f"(a Serve app, another run) to end")


def _listing(free: list[float]) -> str:
    return ", ".join(f"{c:g}" for c in free) or "none"


def _check_cpus(plan: WorkerPlan, total_cpus: float) -> WorkerPlan:
    need = plan.workers * plan.resources["CPU"]
    if need > total_cpus + 1e-9:
        raise ResourceError(f"train.num_workers={plan.workers} x train.cpus_per_worker={plan.resources['CPU']:g} needs "
                         f"{need:g} CPU(s) but the cluster has {total_cpus:g}: lower train.num_workers or "
                         f"train.cpus_per_worker")
    return plan


def cluster_worker_plan(tc: TrainConfig, progress=lambda m: None,
                        reserve_cpus: Callable[[int], float] = lambda workers: 0.0) -> WorkerPlan:
    """The plan for the connected cluster. `reserve_cpus(workers)`: CPUs per node an auto size
    leaves free for a group of that many workers. On an autoscaling cluster nodes may still be
    coming: `train.resource_wait_s` keeps re-checking for that long before the error stands."""
    import ray

    deadline = time.monotonic() + tc.resource_wait_s
    while True:
        res = ray.cluster_resources()
        try:
            free = settled_free_cpus() if AUTO in (tc.num_workers, tc.cpus_per_worker) else ()
            plan = plan_workers(tc, res.get("CPU", 0.0), res.get("GPU", 0.0), free)
            reserve = reserve_cpus(plan.workers)
            if reserve and free:
                plan = plan_workers(tc, res.get("CPU", 0.0), res.get("GPU", 0.0), free, reserve)
        except ResourceError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(2.0)
            continue
        if plan.note:
            progress(f"train: {plan.note}")
        return plan


def settled_free_cpus(read=None, quiet_s: float = 1.0, limit_s: float = 5.0, sleep=time.sleep,
                      clock=time.monotonic) -> list[float]:
    """Each node's free CPUs once they have settled: a run that just ended (this driver's last
    `fit()`, an ingest's actors) gives its CPUs back a moment after it returns, and sizing from
    that moment would plan around cores about to be free. Returns at once when every core is free,
    else when nothing changed for `quiet_s` (a Serve replica holding some), at most `limit_s`."""
    if read is None:
        from rayline.ray_compat import cpus_per_node as read
    start = changed = clock()
    last = read()
    while not all(f >= t - 1e-9 for f, t in last) and clock() - changed < quiet_s and clock() - start < limit_s:
        sleep(0.1)
        now = read()
        if now != last:
            last, changed = now, clock()
    return [f for f, _ in last]
