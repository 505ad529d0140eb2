"""The training loop's optimiser (fused kernels on CUDA, torch's default elsewhere) and its global batch (no cluster)."""

import pytest
import torch

from rayline.config import TrainConfig
from rayline.train.loop import _optimizer, optimizer_options


def test_fused_only_on_cuda():
    assert optimizer_options("cuda") == {"fused": True}
    assert optimizer_options("cpu") == {} and optimizer_options("mps") == {}


@pytest.mark.parametrize("name", ["adamw", "adam", "sgd"])
def test_every_optimizer_takes_the_cuda_options_and_steps(name, monkeypatch):
    """The options are valid for each optimiser (torch's fused kernels also run on CPU, so the
    CUDA choice is exercised here), and a step moves the weights."""
    import rayline.train.loop as loop

    monkeypatch.setattr(loop, "optimizer_options", lambda device_type: {"fused": True})
    model = torch.nn.Linear(3, 1)
    opt = _optimizer(TrainConfig(optimizer=name, lr=0.1), model, torch.device("cpu"))
    assert opt.defaults.get("fused") is True
    before = model.weight.detach().clone()
    model(torch.randn(8, 3)).pow(2).sum().backward()
    opt.step()
    assert not torch.equal(before, model.weight)


@pytest.mark.parametrize("global_batch,world,per_worker", [(2048, 1, 2048), (2048, 2, 1024), (2048, 3, 683),
                                                           (1, 4, 1), (1000, 8, 125)])
def test_batch_size_is_the_global_batch_split_across_workers(global_batch, world, per_worker):
    from rayline.train.loop import worker_batch

    assert worker_batch(global_batch, world) == per_worker
    assert per_worker * world >= global_batch > (per_worker - 1) * world  # no row of the global batch lost
