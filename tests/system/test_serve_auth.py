"""The endpoint with API keys, over real HTTP on 127.0.0.1: no key, no prediction; probes stay open."""

import httpx
import pytest

from rayline.config import load_config
from rayline.registry import Registry
from rayline.serve.deploy import deploy
from tests.conftest import FLIGHTS_CONFIG
from tests.conftest import SERVE_PORT as PORT

KEY, OLD = "rl-test-key-" + "a1" * 16, "rl-old-key-" + "b2" * 16


@pytest.fixture(scope="module")
def secured(flights_model, tmp_path_factory):
    from ray import serve

    cfg, storage, _ = flights_model
    keys = tmp_path_factory.mktemp("keys") / "api-keys"
    keys.write_text(f"{OLD}\n{KEY}\n")  # two active keys: a rotation in progress
    overrides = [f"storage.root={cfg.storage.root}", f"serve.port={PORT}", "serve.app_name=secured",
                 "serve.autoscaling.min_replicas=1", "serve.autoscaling.max_replicas=1", "serve.cpus_per_replica=0.25",
                 f"serve.auth.api_key_file={keys}"]
    scfg = load_config(FLIGHTS_CONFIG, overrides)
    d = deploy(scfg)
    _, model = Registry(storage, cfg.name).load(d.model_version)
    yield d, model.spec.example_record()
    serve.delete(scfg.serve.app_name)


def _predict(url, record, headers=None):
    return httpx.post(f"{url}/predict", json=record, headers=headers or {}, timeout=30)


@pytest.mark.parametrize("header", [None, "Bearer nope-not-a-key-at-all", f"Basic {KEY}", f"Bearer {KEY[:-1]}", KEY])
def test_predict_without_a_valid_key_is_401(secured, header):
    d, record = secured
    r = _predict(d.url, record, {"authorization": header} if header else None)
    assert r.status_code == 401 and r.json()["error"] == "unauthorized"
    assert r.headers["www-authenticate"].startswith("Bearer") and "Authorization: Bearer" in r.json()["message"]
    assert KEY not in r.text and OLD not in r.text


def test_either_active_key_is_accepted(secured):
    d, record = secured
    for key in (KEY, OLD):
        r = _predict(d.url, record, {"authorization": f"Bearer {key}"})
        assert r.status_code == 200 and 0 < r.json()["predictions"][0]["probability"] < 1


def test_model_and_drift_need_the_key_probes_do_not(secured):
    d, _ = secured
    auth = {"authorization": f"Bearer {KEY}"}
    for path in ("/model", "/drift", "/openapi.json", "/docs"):  # the document names every field too
        assert httpx.get(f"{d.url}{path}", timeout=30).status_code == 401
        assert httpx.get(f"{d.url}{path}", headers=auth, timeout=30).status_code == 200
    assert httpx.get(f"{d.url}/model", headers=auth, timeout=30).json()["model_version"] == d.model_version
    assert httpx.get(f"{d.url}/healthz", timeout=30).status_code == 200
    assert httpx.get(f"{d.url}/readyz", timeout=30).json()["ready"] is True


def test_schemathesis_with_the_key_finds_no_failure(secured):
    from tests.system.test_serve import schemathesis

    d, _ = secured
    r = schemathesis(d.url, f"Authorization: Bearer {KEY}")
    assert r.returncode == 0 and " passed" in r.stdout and "failure" not in r.stdout.lower(), r.stdout[-6000:]
