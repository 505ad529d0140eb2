"""The training loop's optimiser: fused kernels on CUDA, torch's default elsewhere (no cluster)."""

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
