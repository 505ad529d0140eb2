"""The constraints the endpoint and batch inference enforce come from the config's rules."""

from rayline.config import load_config
from rayline.data.plan import feature_constraints
from tests.conftest import FLIGHTS_CONFIG


def test_constraints_keep_zero_bounds_and_joined_rules():
    c = feature_constraints(load_config(FLIGHTS_CONFIG))
    assert c["distance"] == {"required": True, "min": 0, "max": 6000}
    assert c["origin"]["allowed"] == ["EWR", "JFK", "LGA"] and c["origin"]["required"] is True
    assert c["temp"] == {"min": -40, "max": 130}          # from the weather table's rules, optional
    assert "required" not in c["plane_year"]              # a joined value may be missing
