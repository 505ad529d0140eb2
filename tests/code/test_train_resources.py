"""Sizing the training worker group from what the cluster has (no cluster needed)."""

import pytest

from rayline.config import TrainConfig
from rayline.errors import ResourceError
from rayline.train.resources import plan_workers


def tc(**kw) -> TrainConfig:
    return TrainConfig(**{"num_workers": 2, "cpus_per_worker": 0.5, **kw})


@pytest.mark.parametrize("gpus,workers,use_gpu", [(0, 2, False), (1, 1, True), (2, 2, True), (8, 2, True), (1.5, 1, True)])
def test_auto_fits_the_gpus_there_are(gpus, workers, use_gpu):
    plan = plan_workers(tc(), total_cpus=16, total_gpus=gpus)
    assert (plan.workers, plan.use_gpu) == (workers, use_gpu)
    assert plan.resources == ({"CPU": 0.5, "GPU": 1} if use_gpu else {"CPU": 0.5})
    assert ("training on 1 GPU worker" in plan.note) == (use_gpu and workers < 2)


def test_one_gpu_workstation_with_the_default_config_trains_on_its_gpu():
    plan = plan_workers(TrainConfig(), total_cpus=8, total_gpus=1)   # default num_workers=2, use_gpu=auto
    assert plan.workers == 1 and plan.device == "cuda"


def test_explicit_gpus_the_cluster_lacks_fail_at_once():
    with pytest.raises(ResourceError, match=r"num_workers=2 needs 2 GPU\(s\).*the cluster has 1: set train.num_workers<=1"):
        plan_workers(tc(use_gpu=True), total_cpus=16, total_gpus=1)
    with pytest.raises(ResourceError, match=r"has 0: .*or train.use_gpu=auto \(or false\)"):
        plan_workers(tc(use_gpu=True), total_cpus=16, total_gpus=0)
    assert plan_workers(tc(use_gpu=False), total_cpus=16, total_gpus=4).use_gpu is False


def test_cpus_the_cluster_lacks_fail_at_once():
    with pytest.raises(ResourceError, match=r"num_workers=4 x train.cpus_per_worker=1 needs 4 CPU\(s\) but the cluster has 2"):
        plan_workers(tc(num_workers=4, cpus_per_worker=1), total_cpus=2, total_gpus=0)
    assert plan_workers(tc(num_workers=4), total_cpus=2, total_gpus=0).workers == 4


def test_auto_is_one_worker_per_node_with_its_free_cores():
    auto = TrainConfig()                                              # the defaults: auto, auto
    plan = plan_workers(auto, total_cpus=2, total_gpus=0, free_cpus=[2.0])
    assert (plan.workers, plan.resources, plan.strategy) == (1, {"CPU": 2.0}, "SPREAD")
    # three nodes: the group runs at its slowest member's pace, so all get the smallest whole count
    plan = plan_workers(auto, total_cpus=20, total_gpus=0, free_cpus=[8.0, 4.0, 8.0])
    assert (plan.workers, plan.resources) == (3, {"CPU": 4.0})
    # a replica holding a quarter CPU: ask for what is free (a whole-node request would wait forever)
    assert plan_workers(auto, total_cpus=2, total_gpus=0, free_cpus=[1.75]).resources == {"CPU": 1.0}
    # nodes without a whole CPU free do not get a worker; with none, the freest node gets one
    assert plan_workers(auto, total_cpus=5, total_gpus=0, free_cpus=[4.0, 0.5]).workers == 1
    assert plan_workers(auto, total_cpus=2, total_gpus=0, free_cpus=[0.25, 0.6]).resources == {"CPU": 0.5}
    # Ray Data streaming the split beside the workers keeps a CPU per node
    assert plan_workers(auto, total_cpus=4, total_gpus=0, free_cpus=[4.0], reserve_cpus=1).resources == {"CPU": 3.0}
    # a placement strategy the user set wins
    assert plan_workers(TrainConfig(placement_strategy="PACK"), 4, 0, [2.0, 2.0]).strategy == "PACK"


def test_auto_sizes_fill_what_the_other_setting_fixes():
    # explicit workers, auto CPUs: the largest size that places them all on the free cores
    assert plan_workers(TrainConfig(num_workers=2), 2, 0, [2.0]).resources == {"CPU": 1.0}
    assert plan_workers(TrainConfig(num_workers=3), 6, 0, [3.0, 3.0]).resources == {"CPU": 1.0}  # 2 would not place 3
    assert plan_workers(TrainConfig(num_workers=4), 2, 0, [2.0]).resources == {"CPU": 0.5}
    # auto workers, explicit CPUs: one per node that has them free
    assert plan_workers(TrainConfig(cpus_per_worker=2), 8, 0, [4.0, 1.0, 2.0]).workers == 2
    with pytest.raises(ResourceError, match=r"cpus_per_worker=4: no node has that many CPUs free \(free per node: 2, 1\)"):
        plan_workers(TrainConfig(cpus_per_worker=4), 3, 0, [2.0, 1.0])
    with pytest.raises(ResourceError, match=r"8 worker\(s\) need at least 0.25 CPU each, but the nodes have 1 CPU"):
        plan_workers(TrainConfig(num_workers=8), 2, 0, [1.0])


def test_auto_on_gpus_is_one_worker_per_gpu_with_a_cpu():
    plan = plan_workers(TrainConfig(), total_cpus=32, total_gpus=4, free_cpus=[16.0, 16.0])
    assert (plan.workers, plan.use_gpu, plan.resources, plan.note) == (4, True, {"CPU": 1.0, "GPU": 1}, "")
    with pytest.raises(ResourceError, match=r"use_gpu=true needs a GPU but the cluster has 0"):
        plan_workers(TrainConfig(use_gpu=True), total_cpus=8, total_gpus=0)


def test_auto_and_sizes_are_validated_with_the_field_named():
    assert TrainConfig(num_workers="auto", cpus_per_worker=1.5).cpus_per_worker == 1.5
    with pytest.raises(ValueError, match="num_workers"):
        TrainConfig(num_workers=0)
    with pytest.raises(ValueError, match="cpus_per_worker"):
        TrainConfig(cpus_per_worker="all")


class _Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s


def test_free_cores_are_read_once_they_settle():
    from rayline.train.resources import settled_free_cpus

    clock = _Clock()
    # the last run's workers give their cores back a moment after fit() returns
    views = iter([[(0.0, 2.0)], [(0.0, 2.0)], [(2.0, 2.0)]])
    assert settled_free_cpus(lambda: next(views), sleep=clock.sleep, clock=clock) == [2.0]
    assert clock.t == pytest.approx(0.2)
    # a replica holding a quarter core: what is free once nothing changed for a second
    clock = _Clock()
    assert settled_free_cpus(lambda: [(1.75, 2.0)], sleep=clock.sleep, clock=clock) == [1.75]
    assert 1.0 <= clock.t < 1.2
    # all free: no wait at all
    clock = _Clock()
    assert settled_free_cpus(lambda: [(4.0, 4.0), (2.0, 2.0)], sleep=clock.sleep, clock=clock) == [4.0, 2.0]
    assert clock.t == 0.0
