"""What Ray Train's controller starts with for a run: its variables and its helper actors (no cluster)."""

import os

import pytest

from rayline.train.controller_setup import (CONTROLLER_POLL_ENV, PREEMPTION_WATCHER_ENV, controller_env,
                                            dropped_callbacks, lean, scoped_env)


@pytest.mark.parametrize("has_datasets,embedded,dropped", [
    (True, False, set()),                                              # a cluster, streamed feed: Ray's defaults
    (False, False, {"DatasetsCallback"}),                              # no Ray Dataset: no dataset manager
    (True, True, {"PlacementGroupCleanerCallback"}),                   # embedded: the driver frees placement groups
    (False, True, {"DatasetsCallback", "PlacementGroupCleanerCallback"}),
])
def test_helper_actors_are_dropped_only_where_they_have_nothing_to_do(has_datasets, embedded, dropped):
    assert dropped_callbacks(has_datasets=has_datasets, embedded=embedded) == dropped


def test_the_preemption_watcher_is_off_only_on_an_embedded_ray():
    assert controller_env(embedded=False, poll_s=0.5) == {CONTROLLER_POLL_ENV: "0.5"}
    assert controller_env(embedded=True, poll_s=2) == {CONTROLLER_POLL_ENV: "2", PREEMPTION_WATCHER_ENV: "0"}


class DatasetsCallback:
    pass


class PlacementGroupCleanerCallback:
    pass


class OtherCallback:
    pass


class FakeTrainer:
    def _create_default_callbacks(self):
        return [DatasetsCallback(), PlacementGroupCleanerCallback(), OtherCallback()]


def test_lean_leaves_out_the_named_callbacks_and_keeps_the_rest():
    cls = lean(FakeTrainer, frozenset({"DatasetsCallback"}))
    assert cls.__name__ == "FakeTrainer" and issubclass(cls, FakeTrainer)
    assert [type(c).__name__ for c in cls()._create_default_callbacks()] == ["PlacementGroupCleanerCallback",
                                                                             "OtherCallback"]
    assert lean(FakeTrainer, frozenset()) is FakeTrainer


def test_scoped_env_sets_what_the_user_did_not_and_restores_it(monkeypatch):
    monkeypatch.setenv("RAYLINE_TEST_USER_SET", "user")
    monkeypatch.delenv("RAYLINE_TEST_UNSET", raising=False)
    with pytest.raises(RuntimeError):
        with scoped_env({"RAYLINE_TEST_USER_SET": "ours", "RAYLINE_TEST_UNSET": "ours"}):
            assert os.environ["RAYLINE_TEST_USER_SET"] == "user"      # the user's value wins
            assert os.environ["RAYLINE_TEST_UNSET"] == "ours"
            raise RuntimeError("fit failed")
    assert os.environ["RAYLINE_TEST_USER_SET"] == "user" and "RAYLINE_TEST_UNSET" not in os.environ
