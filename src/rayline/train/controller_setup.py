"""How Ray Train's controller is set up for a run: its environment, and its helper actors less
those with nothing to do.

The controller checks its workers every `train.controller_poll_s` (Ray's 2 s default added 2-5 s
to every run here: it sees the end of training at its next check). Ray Train hands the
driver's variables to its controller when `fit()` starts it, so they are set around `fit()`.

Besides its controller and workers, Ray Train starts a Python process per helper actor: a
dataset manager, a placement-group cleaner and a preemption watcher (plus the synchronization
actor every run needs). Each costs ~1.4 CPU-s to start, all of it while the workers import
torch. On this 2-core host, from `fit()` to the first step (4 runs each, same session):
10.2-11.5 s with all three, 8.4-9.7 s without the dataset manager and the watcher, 7.4-8.4 s
without all three.

Dropped only where they have nothing to do:
- the dataset manager when the trainer has no Ray Datasets (every worker reads its share of
  the splits straight from Parquet);
- the preemption watcher (it reports nodes being drained) on an embedded Ray: the cluster is
  this one node, with no autoscaler to drain it, and it ends with the driver;
- the placement-group cleaner (a detached actor that frees the placement group of a controller
  that died) on an embedded Ray. The driver does that itself there
  (`placement_groups_released`): with the cluster in its own process, it outlives the controller
  and sees `fit()` fail.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from rayline import ray_compat
from rayline.ray_compat import TRAIN_CONTROLLER_POLL as CONTROLLER_POLL_ENV
from rayline.ray_compat import TRAIN_PREEMPTION_WATCHER as PREEMPTION_WATCHER_ENV

_DATASETS_CALLBACK = ray_compat.TRAIN_DATASETS_CALLBACK
_PG_CLEANER_CALLBACK = ray_compat.TRAIN_PG_CLEANER_CALLBACK


def dropped_callbacks(*, has_datasets: bool, embedded: bool) -> frozenset[str]:
    """Pure: the names of Ray Train's default callbacks this run does without."""
    names = set()
    if not has_datasets:
        names.add(_DATASETS_CALLBACK)
    if embedded:
        names.add(_PG_CLEANER_CALLBACK)
    return frozenset(names)


def lean(trainer_cls: type, drop: frozenset[str]) -> type:
    """`trainer_cls` whose default callbacks leave out those named in `drop`."""
    return ray_compat.without_default_callbacks(trainer_cls, drop)


def controller_env(*, embedded: bool, poll_s: float) -> dict[str, str]:
    """Pure: the variables Ray Train hands from the driver to its controller for this run."""
    env = {CONTROLLER_POLL_ENV: f"{poll_s:g}"}
    if embedded:
        env[PREEMPTION_WATCHER_ENV] = "0"
    return env


@contextlib.contextmanager
def scoped_env(values: dict[str, str]) -> Iterator[None]:
    """Set the variables the user has not set, for the duration of one `fit()` (Ray Train reads
    them from the driver's environment when it starts the controller); then restore."""
    added = {k: v for k, v in values.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


@contextlib.contextmanager
def placement_groups_released(enabled: bool) -> Iterator[None]:
    """If `fit()` fails, remove the placement groups created during it that are still held (a
    dead controller's would hold its CPUs until the driver exits: a notebook's next run would
    wait for them). For an embedded Ray only, where this driver is the only one creating
    placement groups; on a cluster Ray Train's own cleaner does this."""
    if not enabled:
        yield
        return
    import ray
    from ray.util.placement_group import PlacementGroup, placement_group_table, remove_placement_group

    before = set(placement_group_table())
    try:
        yield
    except BaseException:
        for pg_id, info in placement_group_table().items():
            if pg_id not in before and info.get("state") != "REMOVED":
                try:
                    remove_placement_group(PlacementGroup(ray.PlacementGroupID.from_hex(pg_id)))
                except Exception:  # noqa: BLE001 - removed meanwhile (the controller's own shutdown)
                    pass
        raise
