"""Pure pieces of the serving and batch edges: media types, request ids, GPU planning."""

import pytest

from rayline.batch.predict import gpu_plan
from rayline.errors import ResourceError
from rayline.serve.http import json_content, request_id as _request_id


@pytest.mark.parametrize("value,ok", [
    ("application/json", True), ("Application/JSON", True), ("application/json; charset=utf-8", True),
    ('application/json; charset="UTF-8"', True), ("application/json;charset=utf8", True),
    ("application/json; charset=latin-1", False), ("text/plain", False), ("application/x-www-form-urlencoded", False),
    ("multipart/form-data; boundary=x", False), ("application/jsonp", False), ("", False), (None, False),
])
def test_only_utf8_json_is_accepted(value, ok):
    assert json_content(value) is ok


def test_client_request_ids_are_echoed_only_when_sane():
    assert _request_id("abc-123_x.y:z") == "abc-123_x.y:z"
    for bad in ("<script>", "a" * 65, "ünï", "a b", "", None):
        rid = _request_id(bad)
        assert rid != bad and len(rid) == 16 and rid.isalnum()


@pytest.mark.parametrize("asked,total,free,plan", [
    ("auto", 0, 0, (0.0, 3)), ("auto", 1, 0, (0.0, 3)), ("auto", 2, 2, (1.0, 2)), ("auto", 4, 4, (1.0, 3)),
    (0, 8, 8, (0.0, 3)), (0.5, 1, 1, (0.5, 2)), (1, 2, 1, (1.0, 1)),
])
def test_gpu_plan_fits_what_is_free(asked, total, free, plan):
    assert gpu_plan(asked, 3, total, free) == plan


def test_gpu_plan_fails_at_once_instead_of_waiting():
    with pytest.raises(ResourceError, match=r"gpus_per_actor=1 but the cluster has 0 GPU\(s\); set batch.gpus_per_actor=0"):
        gpu_plan(1, 2, 0, 0)
    with pytest.raises(ResourceError, match=r"only 0 of the cluster's 1 GPU\(s\) are free .*Serve replicas"):
        gpu_plan(1, 2, 1, 0)


def test_deploy_progress_counts_replicas_by_state():
    from types import SimpleNamespace

    from ray.serve._private.common import ReplicaState

    from rayline.serve.deploy import replica_line

    app = SimpleNamespace(deployments={"ModelServer": SimpleNamespace(
        replica_states={ReplicaState.RUNNING: 1, ReplicaState.STARTING: 1})})
    assert replica_line(app) == "replicas: 1 running, 1 starting"
    assert replica_line(SimpleNamespace(deployments={})) is None
