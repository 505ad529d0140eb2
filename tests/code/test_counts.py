"""Count features in pure Arrow (no cluster): partial counts per batch, summed, joined back."""

import pyarrow as pa

from rayline.config import config_from_dict
from rayline.data.counts import PartialCounts, add_counts, finish
from tests.conftest import small_config


def _cfg(tmp_path):
    raw = small_config(tmp_path, tmp_path)
    raw["data"]["counts"] = [{"name": "station_hour_trips", "by": ["station", "hour"]},
                             {"name": "station_trips", "by": ["station"]}]
    raw["data"]["features"]["numeric"] += ["station_hour_trips", "station_trips"]
    return config_from_dict(raw)


def test_counts_sum_over_batches_and_join_back(tmp_path):
    cfg = _cfg(tmp_path)
    a = pa.table({"station": ["A", "A", "B", None], "hour": [1, 1, 2, 1]})
    b = pa.table({"station": ["A", "B"], "hour": [1, 3]})
    part = PartialCounts(cfg.data.counts)
    tables = finish(cfg, pa.concat_tables([part(a), part(b)]))
    # a batch typed differently from the counted one (string hours): keys are matched as text
    probe = pa.table({"station": ["A", "B", "B", "C", None], "hour": ["1", "2", "3", "1", "1"]})
    out, missed = add_counts(pa.table({"x": [0] * 5}), probe, tables, cfg.data.counts)
    assert out.column("station_hour_trips").to_pylist() == [3, 1, 1, None, None]
    assert missed["station_hour_trips"].tolist() == [False, False, False, True, True]
    assert out.column("station_trips").to_pylist() == [3, 2, 2, None, None]


def test_counts_cannot_be_keyed_by_the_label(tmp_path):
    raw = small_config(tmp_path, tmp_path)
    raw["data"]["counts"] = [{"name": "n", "by": ["delay"]}]
    import pytest

    from rayline.errors import ConfigError
    with pytest.raises(ConfigError, match=r"`by` cannot hold the count itself or the label"):
        config_from_dict(raw)
