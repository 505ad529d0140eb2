"""Cluster configs: launcher YAMLs pass Ray's own schema; KubeRay manifests keep their invariants
and embed exactly what the code generates (they cannot drift)."""

import copy
import re

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from rayline.config import load_config
from rayline.serve.deploy import serve_config
from tests.conftest import FLIGHTS_CONFIG, ROOT

CLUSTER = ROOT / "cluster"
LAUNCHER_ENV = "RAY_SERVE_HAPROXY_BINARY_PATH"
IMAGE_LAUNCHER = "/home/ray/anaconda3/bin/rayline-haproxy"  # where pip puts it in rayproject/ray images
SERVE_OVERRIDES = ["storage.root=/mnt/rayline", "serve.host=0.0.0.0", "serve.auth.api_key_env=RAYLINE_API_KEY"]


@pytest.mark.parametrize("name", ["aws.yaml", "gcp.yaml", "local.yaml"])
def test_launcher_configs_validate_offline(name):
    cfg = yaml.safe_load((CLUSTER / name).read_text())
    validate_config(prepare_config(copy.deepcopy(cfg)))
    if name != "local.yaml":
        types = cfg["available_node_types"]
        assert types["head"]["resources"] == {"CPU": 0}
        assert {"cpu_worker", "gpu_worker"} <= set(types)
        assert types["gpu_worker"]["min_workers"] == 0 and types["cpu_worker"]["max_workers"] > 1


def test_serve_config_file_is_what_the_code_generates():
    cfg = load_config(FLIGHTS_CONFIG, SERVE_OVERRIDES)
    generated = serve_config(cfg)
    on_disk = yaml.safe_load((CLUSTER / "serve-flights.yaml").read_text())
    assert on_disk == generated
    from ray.serve.schema import ServeDeploySchema

    ServeDeploySchema.model_validate(on_disk)  # Serve accepts it


def test_kuberay_manifests_share_one_cluster_spec_and_the_serve_config():
    cluster = yaml.safe_load((CLUSTER / "kuberay/raycluster.yaml").read_text())
    job = yaml.safe_load((CLUSTER / "kuberay/rayjob.yaml").read_text())
    service = yaml.safe_load((CLUSTER / "kuberay/rayservice.yaml").read_text())
    spec = cluster["spec"]
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    assert spec["enableInTreeAutoscaling"] is True
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    assert set(groups) == {"cpu", "gpu"}
    assert all(g["minReplicas"] <= g["replicas"] <= g["maxReplicas"] for g in groups.values())
    gpu = groups["gpu"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert gpu["nvidia.com/gpu"] == "1"
    # every pod mounts the shared storage root the configs point at
    for pod in [spec["headGroupSpec"]] + list(groups.values()):
        mounts = pod["template"]["spec"]["containers"][0]["volumeMounts"]
        assert {"name": "rayline-storage", "mountPath": "/mnt/rayline"} in mounts
    assert job["spec"]["rayClusterSpec"] == spec and service["spec"]["rayClusterConfig"] == spec
    assert job["spec"]["backoffLimit"] >= 1 and job["spec"]["shutdownAfterJobFinishes"] is True
    assert "storage.root=/mnt/rayline" in job["spec"]["entrypoint"]
    assert yaml.safe_load(service["spec"]["serveConfigV2"]) == yaml.safe_load((CLUSTER / "serve-flights.yaml").read_text())


@pytest.mark.parametrize("name", ["aws.yaml", "gcp.yaml", "local.yaml"])
def test_launcher_clusters_are_closed(name):
    cfg = yaml.safe_load((CLUSTER / name).read_text())
    assert cfg["file_mounts"]["~/.ray/auth_token"]                        # the token reaches every node
    for cmd in cfg["head_start_ray_commands"] + cfg["worker_start_ray_commands"]:
        assert "RAY_AUTH_MODE=token" in cmd and "chmod 600 ~/.ray/auth_token" in cmd
    head = " ".join(cfg["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head and "0.0.0.0" not in head


def test_scripts_and_kuberay_are_closed():
    script = (CLUSTER / "start-head.sh").read_text()
    assert "export RAY_AUTH_MODE=token" in script and 'DASHBOARD_HOST:-127.0.0.1' in script and "umask 077" in script
    spec = yaml.safe_load((CLUSTER / "kuberay/raycluster.yaml").read_text())["spec"]
    assert spec["authOptions"] == {"mode": "token"}                       # rayjob/rayservice embed this spec
    for pod in [spec["headGroupSpec"]] + spec["workerGroupSpecs"]:        # replicas may run on any pod
        env = {e["name"]: e for e in pod["template"]["spec"]["containers"][0]["env"]}
        assert env["RAYLINE_API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "rayline-api-key", "key": "api-key"}
    serving = load_config(FLIGHTS_CONFIG, SERVE_OVERRIDES).serve
    assert serving.host == "0.0.0.0" and serving.auth.api_key_env == "RAYLINE_API_KEY"


def test_every_cluster_starts_serve_with_the_default_ingress():
    """The ingress is read from the nodes' environment when Ray starts: every way rayline starts a
    cluster sets what `ingress_env` sets for the embedded Ray (HAProxy, its retry policy)."""
    from rayline.config import ServeConfig
    from rayline.serve.ingress import ingress_env

    # ports: Ray's defaults there; the launcher's path is the node's own (checked below)
    wanted = {k: v for k, v in ingress_env(ServeConfig()).items() if "PORT" not in k and k != LAUNCHER_ENV}
    for name in ("aws.yaml", "gcp.yaml", "local.yaml"):
        cfg = yaml.safe_load((CLUSTER / name).read_text())
        for cmd in cfg["head_start_ray_commands"] + cfg["worker_start_ray_commands"]:
            for k, v in wanted.items():
                assert f"{k}={v}" in cmd or f"{k}='{v}'" in cmd, (name, k)
            assert re.search(rf"{LAUNCHER_ENV}=(\$\(command -v )?\S*rayline-haproxy", cmd), name
    for script in ("start-head.sh", "start-worker.sh"):
        assert '. "$(dirname "$0")/serve-ingress.sh"' in (CLUSTER / script).read_text(), script
    text = (CLUSTER / "serve-ingress.sh").read_text()
    for k, v in wanted.items():
        assert f"export {k}=${{{k}:-{v}}}" in text, k
    assert f"export {LAUNCHER_ENV}=${{{LAUNCHER_ENV}:-$launcher}}" in text and "command -v rayline-haproxy" in text
    for manifest in ("raycluster.yaml", "rayjob.yaml", "rayservice.yaml"):
        docs = list(yaml.safe_load_all((CLUSTER / "kuberay" / manifest).read_text()))
        containers = []

        def walk(node):
            if isinstance(node, dict):
                if "containers" in node:
                    containers.extend(c for c in node["containers"] if c["name"].startswith("ray-"))
                for v in node.values():
                    walk(v)
            elif isinstance(node, list):
                for v in node:
                    walk(v)
        walk(docs)
        assert containers, manifest
        for c in containers:
            env = {e["name"]: e.get("value") for e in c.get("env", [])}
            assert {k: env.get(k) for k in wanted} == wanted, (manifest, c["name"])
            assert env.get(LAUNCHER_ENV) == IMAGE_LAUNCHER, (manifest, c["name"])
    assert f"RUN test -x {IMAGE_LAUNCHER}" in (CLUSTER / "Dockerfile").read_text()  # the image has it there


def test_a_node_without_rayline_haproxy_is_refused_before_ray_starts(tmp_path):
    """Without the launcher Serve would start a plain HAProxy: in-flight requests on a dead
    replica would fail again. The start scripts stop there, saying why."""
    import subprocess

    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "RAY": "/bin/false"}
    out = subprocess.run(["bash", str(CLUSTER / "start-worker.sh"), "127.0.0.1"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "rayline-haproxy is not on PATH" in out.stderr, out.stderr


def test_the_watch_cronjob_submits_one_look_of_the_loop_to_the_serving_cluster():
    job = yaml.safe_load((CLUSTER / "kuberay/watch-cronjob.yaml").read_text())
    service = yaml.safe_load((CLUSTER / "kuberay/rayservice.yaml").read_text())
    assert job["kind"] == "CronJob" and job["spec"]["concurrencyPolicy"] == "Forbid"
    cmd = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["command"]
    assert cmd[:3] == ["ray", "job", "submit"] and f"--address=http://{service['metadata']['name']}-head-svc:8265" in cmd
    tail = cmd[cmd.index("--") + 1:]
    assert tail[:2] == ["python", "jobs/watch.py"] and "--once" in tail and "storage.root=/mnt/rayline" in tail
    assert (CLUSTER.parent / "jobs" / "watch.py").exists()
