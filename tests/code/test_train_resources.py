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
