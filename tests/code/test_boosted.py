"""The xgboost family behind the one model interface (no cluster): a booster trained on the
spec's inputs loads from its registry bytes and predicts what a user gets, for every task."""

import numpy as np
import pytest
import xgboost as xgb

from rayline.config import ModelConfig, XGBoostConfig
from rayline.features.spec import LabelSpec, ModelInputs
from rayline.model import boosted
from rayline.model.artifact import BOOSTER, WEIGHTS, LoadedModel, model_file
from tests.code.test_network import spec  # noqa: F401  (fixture)


def _inputs(spec, n, seed=0):  # noqa: F811
    rng = np.random.default_rng(seed)
    num = rng.normal(size=(n, len(spec.numeric_inputs))).astype(np.float32)
    cat = np.stack([rng.integers(0, c.cardinality, n) for c in spec.categorical], axis=1).astype(np.int64)
    return num, cat


def _train(spec, label: LabelSpec, y, num, cat) -> bytes:  # noqa: F811
    s = spec.model_copy(update={"label": label})
    from rayline.train.boosted_loop import target
    d = boosted.dmatrix(s, num, cat, target(label, y))
    b = xgb.train(boosted.params(s, XGBoostConfig(max_depth=3, min_child_weight=1), "cpu", 0), d, 30)
    return bytes(b.save_raw("ubj"))


def test_model_file_follows_the_family():
    assert model_file(ModelConfig()) == WEIGHTS
    assert model_file(ModelConfig(family="xgboost").model_dump_json()) == BOOSTER


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_booster_round_trips_and_predicts_in_user_units(spec, task):  # noqa: F811
    num, cat = _inputs(spec, 600)
    signal = num[:, 0] + (cat[:, 0] % 2)
    if task == "binary":
        label = LabelSpec(column="y", task="binary", train_mean=0.5)
        y = (signal > np.median(signal)).astype(np.float32)
    elif task == "multiclass":
        label = LabelSpec(column="y", task="multiclass", classes=["a", "b", "c"])
        y = np.digitize(signal, np.quantile(signal, [1 / 3, 2 / 3])).astype(np.float32)
    else:
        label = LabelSpec(column="y", task="regression", train_mean=5000.0, train_std=1000.0, standardized=True)
        y = (5000 + 1000 * signal).astype(np.float32)
    blob = _train(spec, label, y, num, cat)
    s = spec.model_copy(update={"label": label})
    model = LoadedModel.from_bytes(blob, s.to_json(), ModelConfig(family="xgboost").model_dump_json())
    assert model.family == "xgboost" and model.net is None
    p = model.predict_inputs(ModelInputs(num=num, cat=cat))
    assert np.isfinite(p).all()
    if task == "binary":
        assert p.shape == (600,) and ((p > 0) & (p < 1)).all() and ((p > 0.5) == y).mean() > 0.8
    elif task == "multiclass":
        assert p.shape == (600, 3) and np.allclose(p.sum(1), 1, atol=1e-5) and (p.argmax(1) == y).mean() > 0.6
    else:
        assert p.shape == (600,) and np.corrcoef(p, y)[0, 1] > 0.9 and abs(p.mean() - y.mean()) < 300  # in units
    # same answer one row at a time (serving) as in a batch
    one = np.stack([model.predict_inputs(ModelInputs(num=num[i:i + 1], cat=cat[i:i + 1]))[0] for i in range(5)])
    np.testing.assert_allclose(one, p[:5], rtol=1e-6)
    assert model.predict_inputs(ModelInputs(num=num[:0], cat=cat[:0])).shape[0] == 0


def test_booster_bytes_are_data_not_code(spec):  # noqa: F811
    with pytest.raises(xgb.core.XGBoostError):
        LoadedModel.from_bytes(b"\x80\x04not a model", spec.to_json(), ModelConfig(family="xgboost").model_dump_json())


def test_outputs_match_torchs_activations_and_stay_finite_at_the_extremes():
    import warnings

    import torch

    from rayline.model.outputs import from_raw

    x = np.array([-1e4, -88.5, -20.0, -1.0, 0.0, 0.5, 20.0, 1e4], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warning from exp at either end
        p = from_raw(LabelSpec(column="y", task="binary"), x)
        m = from_raw(LabelSpec(column="y", task="multiclass", classes=["a", "b"]), np.stack([x, -x], 1))
    assert p.dtype == np.float32 and m.dtype == np.float32
    np.testing.assert_allclose(p, torch.sigmoid(torch.from_numpy(x)).numpy(), rtol=1e-6, atol=1e-30)
    np.testing.assert_allclose(m, torch.softmax(torch.from_numpy(np.stack([x, -x], 1)), dim=1).numpy(),
                               rtol=1e-6, atol=1e-30)
    assert from_raw(LabelSpec(column="y", task="multiclass", classes=["a", "b"]), np.zeros((0, 2), np.float32)).shape == (0, 2)


def _save_booster(spec, d) -> None:  # noqa: F811
    """A binary booster, its spec and 200 rows of inputs as files, for a fresh process to load."""
    num, cat = _inputs(spec, 200)
    label = LabelSpec(column="y", task="binary", train_mean=0.5)
    (d / "booster.ubj").write_bytes(_train(spec, label, (num[:, 0] > 0).astype(np.float32), num, cat))
    (d / "spec.json").write_text(spec.model_copy(update={"label": label}).to_json())
    np.save(d / "num.npy", num)
    np.save(d / "cat.npy", cat)


def test_serving_and_scoring_a_booster_never_import_torch(spec, tmp_path):  # noqa: F811
    """torch costs a replica or a batch actor ~2 s and ~200 MB: a booster's path must not load it."""
    import subprocess
    import sys

    _save_booster(spec, tmp_path)
    code = f"""
import sys
from pathlib import Path
import numpy as np
import rayline.serve.app, rayline.batch.predict
from rayline.config import ModelConfig
from rayline.features.spec import FeatureSpec, ModelInputs
from rayline.batch.predict import Score, ScoringPlan
from rayline.model.artifact import LoadedModel
d = Path({str(tmp_path)!r})
spec = FeatureSpec.from_json((d / "spec.json").read_text())
model = LoadedModel.from_parts((d / "booster.ubj").read_bytes(), spec, ModelConfig(family="xgboost"))
p = model.predict_inputs(ModelInputs(num=np.load(d / "num.npy"), cat=np.load(d / "cat.npy")))
Score(ScoringPlan(spec=spec, model=(d / "booster.ubj").read_bytes(), model_config=ModelConfig(family="xgboost"),
                  version=1, keep=()))
assert p.shape == (200,)
print("torch" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"


def test_a_process_rayline_owns_loads_a_booster_without_scikit_learn(spec, tmp_path):  # noqa: F811
    """xgboost imports scikit-learn when installed (0.6 s of a batch actor's or replica's start);
    rayline's own processes skip it and predict the same; a driver's import is left as xgboost does it."""
    import subprocess
    import sys

    _save_booster(spec, tmp_path)
    code = f"""
import sys
from pathlib import Path
import numpy as np
from rayline.config import ModelConfig
from rayline.features.spec import FeatureSpec, ModelInputs
from rayline.model import boosted
from rayline.model.artifact import LoadedModel
if sys.argv[1] == "owned":
    boosted.lean_imports()
d = Path({str(tmp_path)!r})
spec = FeatureSpec.from_json((d / "spec.json").read_text())
model = LoadedModel.from_parts((d / "booster.ubj").read_bytes(), spec, ModelConfig(family="xgboost"))
p = model.predict_inputs(ModelInputs(num=np.load(d / "num.npy"), cat=np.load(d / "cat.npy")))
np.save(d / (sys.argv[1] + ".npy"), p)
print("sklearn" in sys.modules)
import sklearn.base  # still importable afterwards: nothing is left hidden
"""
    seen = {}
    for role in ("owned", "driver"):
        out = subprocess.run([sys.executable, "-c", code, role], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        seen[role] = out.stdout.strip()
    assert seen == {"owned": "False", "driver": "True"}
    np.testing.assert_array_equal(np.load(tmp_path / "owned.npy"), np.load(tmp_path / "driver.npy"))
