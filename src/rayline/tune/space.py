"""Search spaces: the config's, or sensible defaults per model family (pure: no Ray needed).

A dimension is named by its dotted config key, so a sampled point is a list of `--set`
overrides and each trial's config is validated like any other (errors name the field).
"""

from __future__ import annotations

import json

from pydantic import BaseModel, ValidationError

from rayline.config import RaylineConfig, SearchDim, apply_overrides, config_from_dict
from rayline.errors import ConfigError

DEFAULT_SPACES: dict[str, dict[str, dict]] = {
    "xgboost": {
        "train.model.xgboost.eta": {"loguniform": (0.01, 0.2)},
        "train.model.xgboost.max_depth": {"randint": (3, 10)},
        "train.model.xgboost.min_child_weight": {"loguniform": (1.0, 300.0)},
        "train.model.xgboost.subsample": {"uniform": (0.6, 1.0)},
        "train.model.xgboost.colsample_bytree": {"uniform": (0.5, 1.0)},
        "train.model.xgboost.reg_lambda": {"loguniform": (0.1, 10.0)},
    },
    "mlp": {
        "train.lr": {"loguniform": (3e-4, 1e-2)},
        "train.weight_decay": {"loguniform": (1e-6, 1e-3)},
        "train.model.dropout": {"uniform": (0.0, 0.3)},
        "train.batch_size": {"choice": [512, 1024, 2048]},
        "train.model.hidden": {"choice": [[256, 128], [512, 256], [128, 64]]},
    },
}


def search_space(cfg: RaylineConfig) -> dict[str, SearchDim]:
    """The configured space, else the family's default; every key checked against the config."""
    space = cfg.tune.search_space or {k: SearchDim.model_validate(v)
                                      for k, v in DEFAULT_SPACES[cfg.train.model.family].items()}
    base = cfg.model_dump(mode="json")
    for key, dim in space.items():
        _check_key(base, key)
        sample = _a_value(dim)
        try:  # a value of the dimension must make a valid config
            config_from_dict(base, overrides({key: sample}), source=f"tune.search_space.{key}")
        except ConfigError as e:
            raise ConfigError(f"tune.search_space.{key}: a sampled value {sample!r} is not valid: {e}") from None
    return space


def _check_key(base: dict, key: str) -> None:
    node = base
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ConfigError(f"tune.search_space: {key!r} is not a config field (no {part!r} there)")
        node = node[part]


def _a_value(dim: SearchDim):
    if dim.choice is not None:
        return dim.choice[0]
    lo_hi = dim.loguniform or dim.uniform or dim.randint
    return lo_hi[0]


def to_ray(space: dict[str, SearchDim]) -> dict:
    """Ray Tune distributions, keyed by the dotted config keys."""
    from ray import tune

    out = {}
    for key, d in space.items():
        if d.loguniform is not None:
            out[key] = tune.loguniform(*d.loguniform)
        elif d.uniform is not None:
            out[key] = tune.uniform(*d.uniform)
        elif d.randint is not None:
            out[key] = tune.randint(d.randint[0], d.randint[1] + 1)  # Tune's upper bound is exclusive
        else:
            out[key] = tune.choice(d.choice)
    return out


def overrides(params: dict) -> list[str]:
    """A sampled point as `--set` overrides (values as JSON, which the override parser reads as YAML)."""
    return [f"{k}={json.dumps(v)}" for k, v in sorted(params.items())]


def trial_config(base: RaylineConfig, params: dict) -> RaylineConfig:
    """`base` (validated on the driver) at one sampled point. Only the sections the point changes
    are validated again, with the point's values in them; the rest is taken as it is."""
    if not params:
        return base
    merged = apply_overrides(base.model_dump(mode="json"), overrides(params))
    update = {}
    for section in sorted({k.split(".", 1)[0] for k in params}):
        current = getattr(base, section, None)
        if not isinstance(current, BaseModel):  # a top-level value: the whole config decides
            return config_from_dict(merged, source="tune trial")
        try:
            update[section] = type(current).model_validate(merged[section])
        except ValidationError:
            config_from_dict(merged, source="tune trial")  # raises ConfigError naming the full path
            raise
    return base.model_copy(update=update)
