"""us_holiday time part: days to the nearest US federal holiday, from the timestamp alone."""

import datetime as dt

import numpy as np

from tests.conftest import inputs_of
from rayline.features.calendar import days_to_holiday, us_federal_holidays
from rayline.features.spec import FeatureSpec, LabelSpec, TimeSpec


def test_us_federal_holidays_follow_their_rules():
    assert dt.date(2013, 11, 28) in us_federal_holidays(2013)        # 4th Thursday of November
    assert dt.date(2013, 5, 27) in us_federal_holidays(2013)         # last Monday of May
    assert dt.date(2024, 1, 15) in us_federal_holidays(2024)         # 3rd Monday of January
    assert dt.date(2013, 6, 19) not in us_federal_holidays(2013) and dt.date(2022, 6, 19) in us_federal_holidays(2022)


def test_days_to_holiday_is_capped_and_null_safe():
    day = lambda s: (dt.date.fromisoformat(s) - dt.date(1970, 1, 1)).days  # noqa: E731
    d = np.array([day("2013-11-28"), day("2013-11-25"), day("2013-12-31"), day("2013-03-25"), 0])
    assert days_to_holiday(d, np.array([True, True, True, True, False])).tolist() == [0, 3, 1, 30, 30]


def test_the_part_is_one_column_in_local_time():
    spec = FeatureSpec(numeric=[], categorical=[], label=LabelSpec(column="y", task="binary"),
                       time=[TimeSpec(name="t", parts=["hour", "us_holiday"], timezone="America/New_York")])
    assert spec.numeric_inputs == ["t__hour_sin", "t__hour_cos", "t__us_holiday"]
    # 03:00 UTC on Nov 29 is still Thanksgiving evening in New York
    x = inputs_of(spec, [{"t": "2013-11-29T03:00:00Z"}, {"t": "2013-03-25T12:00:00Z"}, {"t": None}]).num
    np.testing.assert_allclose(x[:, 2], [0.0, 1.0, 1.0])
