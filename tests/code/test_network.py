"""Network and artifact: built from the spec, weights load without unpickling objects."""

import io
import pickle

import numpy as np
import pytest
import torch

from rayline.config import ModelConfig, config_from_dict
from rayline.features.fit import build_spec, partial_stats
from rayline.model.artifact import LoadedModel, weights_to_bytes
from rayline.model.network import TabularNet, embedding_dim
from tests.conftest import inputs_of, small_config, small_tables


@pytest.fixture
def spec(tmp_path):
    cfg = config_from_dict(small_config(tmp_path, tmp_path))
    t = small_tables(200)["trips"]
    import pyarrow as pa
    t = t.append_column("elevation", pa.array(np.ones(200))).append_column("seats", pa.array(np.ones(200)))
    t = t.append_column("maker", pa.array(["X"] * 200))
    return build_spec(partial_stats(t, cfg.data.features, np.zeros(200)), cfg)


def test_shapes_follow_the_spec(spec):
    net = TabularNet(spec, ModelConfig(hidden=[16, 8]))
    assert [e.num_embeddings for e in net.embeddings] == [c.cardinality for c in spec.categorical]
    out = net(torch.zeros(5, len(spec.numeric_inputs)), torch.zeros(5, len(spec.categorical), dtype=torch.long))
    assert out.shape == (5,)
    assert embedding_dim(3, 16) >= 2 and embedding_dim(100000, 16) == 16


def test_weights_round_trip_and_refuse_pickled_code(spec):
    cfg = ModelConfig(hidden=[16], norm="batch")
    net = TabularNet(spec, cfg).eval()
    blob = weights_to_bytes(net)
    loaded = LoadedModel.from_bytes(blob, spec.to_json(), cfg.model_dump_json())
    rec = [{"distance": 100.0, "station": "AAA"}]
    x = inputs_of(spec, rec)
    with torch.no_grad():
        ref = torch.sigmoid(net(torch.from_numpy(x.num), torch.from_numpy(x.cat))).numpy()
    np.testing.assert_allclose(loaded.predict_records(rec), ref, rtol=1e-6)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))
    buf = io.BytesIO()
    torch.save({"x": Evil()}, buf)
    with pytest.raises(pickle.UnpicklingError):
        LoadedModel.from_bytes(buf.getvalue(), spec.to_json(), cfg.model_dump_json())


def test_regression_target_is_learned_standardized_and_answered_in_original_units():
    import torch

    from rayline.features.spec import LabelSpec
    from rayline.model.outputs import from_raw, training_target

    label = LabelSpec(column="y", task="regression", train_mean=12_000.0, train_std=3_000.0, standardized=True)
    y = torch.tensor([6_000.0, 12_000.0, 30_000.0])
    z = training_target(label, y)
    assert torch.allclose(z, torch.tensor([-2.0, 0.0, 6.0]))
    np.testing.assert_allclose(from_raw(label, z.numpy()), y.numpy(), rtol=1e-6)
    old = label.model_copy(update={"standardized": False})   # models trained before: raw values
    assert torch.equal(training_target(old, y), y) and np.array_equal(from_raw(old, y.numpy()), y.numpy())
