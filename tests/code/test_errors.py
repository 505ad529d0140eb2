"""A failure deep in a Ray worker reaches the user as its own type and first line."""

from ray.exceptions import RayTaskError
from ray.train.v2.api.exceptions import ControllerError, WorkerGroupError

from rayline.errors import failure_line, root_cause


def test_a_worker_group_error_names_the_first_failed_ranks_exception():
    missing = FileNotFoundError("/root/datasets/x/ready/split=train")
    e = WorkerGroupError("rank 0 failed", {1: ValueError("later rank"), 0: missing})
    assert root_cause(e) is missing
    assert failure_line(e) == "FileNotFoundError: /root/datasets/x/ready/split=train"


def test_task_errors_controller_errors_and_python_chains_are_unwrapped():
    inner = KeyError("origin_hour_departures")
    task = RayTaskError("map_batches", "Traceback (most recent call last):\n  File x\nKeyError", inner)
    assert failure_line(task) == "KeyError: 'origin_hour_departures'"
    assert failure_line(ControllerError(RuntimeError("placement group gone\nmore"))) == "RuntimeError: placement group gone"
    try:
        try:
            raise ZeroDivisionError("division by zero")
        except ZeroDivisionError as z:
            raise RuntimeError("wrapped") from z
    except RuntimeError as e:
        assert failure_line(e) == "ZeroDivisionError: division by zero"


def test_a_cycle_or_an_empty_message_does_not_hang_or_fail():
    a = RuntimeError()
    a.__cause__ = a
    assert failure_line(a) == "RuntimeError"
