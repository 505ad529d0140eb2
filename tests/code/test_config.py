"""Config loading: defaults, overrides, and errors that name the field, the value and what is allowed."""

from pathlib import Path

import pytest

from rayline.config import RaylineConfig, apply_overrides, config_from_dict, load_config
from rayline.errors import ConfigError
from tests.conftest import FLIGHTS_CONFIG, small_config


def test_default_config_is_valid_and_resolves_defaults():
    cfg = load_config(FLIGHTS_CONFIG)
    assert isinstance(cfg, RaylineConfig)
    assert cfg.data.primary == "flights"
    assert cfg.data.joins[0].keys == {"origin": "origin", "time_hour": "time_hour"}  # list shorthand
    assert cfg.serve.autoscaling.min_replicas == 1  # a default the file does not set
    assert cfg.data.split.method == "time"


def test_overrides_are_typed_and_validated():
    cfg = load_config(FLIGHTS_CONFIG, ["train.epochs=3", "train.model.hidden=[64, 32]", "storage.root=s3://b/p"])
    assert cfg.train.epochs == 3 and cfg.train.model.hidden == [64, 32]
    assert cfg.storage.root == "s3://b/p"
    with pytest.raises(ConfigError, match=r"train\.epochs.*greater than or equal to 1.*got 0"):
        load_config(FLIGHTS_CONFIG, ["train.epochs=0"])


def test_override_into_list_by_index():
    raw = {"a": {"b": [{"x": 1}, {"x": 2}]}}
    assert apply_overrides(raw, ["a.b.1.x=5"])["a"]["b"][1]["x"] == 5
    with pytest.raises(ConfigError, match="indexes a list"):
        apply_overrides(raw, ["a.b.one.x=5"])
    with pytest.raises(ConfigError, match="expected dotted.key=value"):
        apply_overrides(raw, ["a.b"])


def test_unknown_field_names_its_path(tmp_path):
    cfg = small_config(tmp_path, tmp_path)
    cfg["data"]["joins"][0]["colums"] = ["x"]
    with pytest.raises(ConfigError) as e:
        config_from_dict(cfg)
    assert "data.joins.0.colums: unknown field" in str(e.value)


@pytest.mark.parametrize("path,value,expect", [
    (("task",), "ranking", "task: Input should be 'binary', 'regression' or 'multiclass'"),
    (("data", "primary"), "nope", "primary 'nope' is not one of sources"),
    (("data", "split", "valid_fraction"), 1.5, "data.split.valid_fraction: Input should be less than 1"),
    (("data", "label", "positive_if"), {">": 1, "<": 2}, "positive_if takes exactly one comparison"),
    (("data", "features", "numeric"), ["distance", "distance"], "repeated: ['distance']"),
    (("name",), "bad name!", "name: String should match pattern"),
])
def test_invalid_values_are_explained(tmp_path, path, value, expect):
    cfg = small_config(tmp_path, tmp_path)
    node = cfg
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    with pytest.raises(ConfigError) as e:
        config_from_dict(cfg)
    assert expect in str(e.value)


def test_rules_are_checked(tmp_path):
    cfg = small_config(tmp_path, tmp_path)
    cfg["data"]["sources"]["trips"]["columns"]["distance"] = {"type": "float", "min": 10, "max": 1}
    with pytest.raises(ConfigError, match=r"min \(10.0\) must be <= max \(1.0\)"):
        config_from_dict(cfg)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(bad)


def test_data_hash_ignores_training_settings():
    a = load_config(FLIGHTS_CONFIG)
    b = load_config(FLIGHTS_CONFIG, ["train.epochs=1", "serve.port=9000"])
    c = load_config(FLIGHTS_CONFIG, ["data.split.valid_fraction=0.2"])
    assert a.data_hash() == b.data_hash() != c.data_hash()
    assert a.config_hash() != b.config_hash()


def test_promotion_tolerance_moved_to_promote_with_a_deprecation():
    import warnings

    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        cfg = load_config(FLIGHTS_CONFIG, ["train.promotion_tolerance=0.02"])
    assert cfg.promote.tolerance == 0.02 and any("promote.tolerance" in str(x.message) for x in w)
    assert load_config(FLIGHTS_CONFIG).promote.tolerance == 0.005


def test_the_serve_config_carries_the_replica_plan_by_value():
    """Replicas get the plan compiled and validated at deploy time (what they read, no more), not
    a path every node must have; a relative storage root arrives absolute."""
    from rayline.serve.deploy import serve_config
    from rayline.serve.options import REPLICA_ARG, ReplicaArgs

    cfg = load_config(FLIGHTS_CONFIG, ["storage.root=/mnt/x", "serve.host=0.0.0.0", "serve.auth.api_key_env=K",
                                       "train.model.xgboost.eta=0.1", "alias=canary"])
    args = serve_config(cfg)["applications"][0]["args"]
    assert set(args) == {REPLICA_ARG}
    plan = ReplicaArgs.model_validate(args[REPLICA_ARG])
    assert plan == ReplicaArgs.from_config(cfg)
    assert (plan.name, plan.alias, plan.storage_root, plan.serve) == ("flights", "canary", "/mnt/x", cfg.serve)
    assert set(args[REPLICA_ARG]["serve"]) == {"host", "auth"}   # only what differs from the defaults travels
    relative = load_config(FLIGHTS_CONFIG, ["storage.root=some/dir"])
    assert ReplicaArgs.from_config(relative).storage_root == str(Path.cwd() / "some/dir")


def test_app_builder_validates_the_plan_once_and_names_the_field():
    from rayline.errors import ConfigError
    from rayline.serve.app import app_builder

    with pytest.raises(ConfigError, match=r"(?s)args.replica.*serve.port"):
        app_builder({"replica": {"name": "m", "alias": "production", "storage_root": "/x", "serve": {"port": "no"}}})


def test_moved_fields_keep_working_for_one_release_with_a_warning():
    raw = small_config(Path("/tmp/d"), Path("/tmp/r"))
    raw["train"] = {**raw.get("train", {}), "slice_columns": ["station"]}
    with pytest.warns(DeprecationWarning, match="train.slice_columns is deprecated: use evaluate.slice_columns"):
        cfg = config_from_dict(raw)
    assert cfg.evaluate.slice_columns == ["station"]
    raw["evaluate"] = {"slice_columns": ["vehicle"]}                 # the new key wins when both are set
    with pytest.warns(DeprecationWarning):
        assert config_from_dict(raw).evaluate.slice_columns == ["vehicle"]


def test_threshold_and_alias_moved_to_their_readers_with_a_warning():
    raw = small_config(Path("/tmp/d"), Path("/tmp/r"))
    raw["train"] = {**raw["train"], "threshold": 0.3}
    raw["serve"] = {"model_alias": "staging"}
    with pytest.warns(DeprecationWarning) as seen:
        cfg = config_from_dict(raw)
    said = " ".join(str(w.message) for w in seen)
    assert "train.threshold is deprecated: use train.model.threshold" in said
    assert "serve.model_alias is deprecated: use alias (top level)" in said
    # the threshold travels with the model (model_config.json); the alias is shared by promote, serve, batch
    assert cfg.train.model.threshold == 0.3 and cfg.alias == "staging"
    assert config_from_dict(small_config(Path("/tmp/d"), Path("/tmp/r"))).alias == "production"
    with pytest.raises(ConfigError, match="alias"):
        config_from_dict({**small_config(Path("/tmp/d"), Path("/tmp/r")), "alias": "../etc"})


def test_lookup_snapshot_modes_and_the_yaml_boolean_trap():
    from rayline.config import load_config as load

    assert load(FLIGHTS_CONFIG, ["serve.lookup_snapshot=none"]).serve.lookup_snapshot == "none"
    assert load(FLIGHTS_CONFIG, ["batch.lookup_snapshot=newest"]).batch.lookup_snapshot == "newest"
    with pytest.raises(ConfigError, match=r"serve.lookup_snapshot: Input should be 'model', 'newest' or 'none' \(got false\)"):
        load(FLIGHTS_CONFIG, ["serve.lookup_snapshot=off"])   # YAML 1.1 reads off as false: hence `none`


@pytest.mark.parametrize("classes,expect", [
    (None, "data.label.classes: task multiclass needs the label column 'delay''s classes, two or more"),
    (["only"], "got ['only']"),
    (["a", "b", "a"], "data.label.classes: each class once"),
])
def test_multiclass_declares_its_classes(tmp_path, classes, expect):
    """Without them every row's class index would be unknown: the run once stopped after the ingest
    with 'split train has 0 label class(es)'."""
    cfg = small_config(tmp_path, tmp_path)
    cfg["task"] = "multiclass"
    cfg["data"]["label"] = {"column": "delay", **({"classes": classes} if classes is not None else {})}
    with pytest.raises(ConfigError) as e:
        config_from_dict(cfg)
    assert expect in str(e.value)


@pytest.mark.parametrize("source,expect", [
    ({"format": "parquet", "path": "x", "delimiter": ";"}, "delimiter is for format csv, not parquet"),
    ({"format": "csv", "path": "x", "delimiter": ";;"}, "delimiter must be one character"),
    ({"format": "csv", "path": "x", "delimiter": '"'}, "other than a quote or a line break"),
    ({"format": "json", "path": "x", "encoding": "cp1252"}, "encoding is for format csv, not json"),
    ({"format": "csv", "path": "x", "encoding": "klingon"}, "is not a text encoding Python knows"),
    ({"format": "csv", "path": "x", "encoding": "utf-16"}, "does not write separators and line breaks as ASCII does"),
    ({"format": "parquet", "path": "x", "decimal": ","}, "decimal is for format csv, not parquet"),
    ({"format": "csv", "path": "x", "decimal": ","}, "decimal ',' needs another field separator: set delimiter"),
])
def test_a_csv_delimiter_and_encoding_are_checked_for_csv_only(tmp_path, source, expect):
    cfg = small_config(tmp_path, tmp_path)
    cfg["data"]["sources"]["vehicles"] = source
    with pytest.raises(ConfigError) as e:
        config_from_dict(cfg)
    assert expect in str(e.value) and "data.sources.vehicles" in str(e.value)


@pytest.mark.parametrize("name", ["label", "prediction", "y", "explain_base"])
def test_a_passthrough_column_cannot_take_a_name_rayline_writes(tmp_path, name):
    """A second 'label' in rayline predict's output: Arrow could not read the file back."""
    cfg = small_config(tmp_path, tmp_path)
    cfg["data"]["passthrough"] = ["trip_id", name]
    with pytest.raises(ConfigError) as e:
        config_from_dict(cfg)
    assert f"data: passthrough ['{name}'] would be a second column of a name rayline writes itself" in str(e.value)


def test_an_encoding_is_kept_by_its_canonical_name(tmp_path):
    cfg = small_config(tmp_path, tmp_path)
    cfg["data"]["sources"]["vehicles"]["encoding"] = "Latin-1"
    assert config_from_dict(cfg).data.sources["vehicles"].encoding == "iso8859-1"


def test_an_epoch_unit_is_a_timestamp_format(tmp_path):
    cfg = small_config(tmp_path, tmp_path)
    cfg["data"]["sources"]["trips"]["columns"]["ts"] = {"type": "timestamp", "format": "epoch_ms"}
    assert config_from_dict(cfg).data.sources["trips"].columns["ts"].format == ["epoch_ms"]
    cfg["data"]["sources"]["trips"]["columns"]["ts"]["format"] = "epoch_days"
    with pytest.raises(ConfigError) as e:
        config_from_dict(cfg)
    assert "is not one of ['epoch_ms', 'epoch_s', 'epoch_us']" in str(e.value)
