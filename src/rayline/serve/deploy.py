"""Deploying the Serve application declaratively, as `serve deploy` and KubeRay do.

The Serve config built here is the one file format for every deployment path: `rayline
serve`/`rayline deploy` apply it through the Serve controller (the same call the dashboard's
REST endpoint makes), `cluster/serve-flights.yaml` is this config written out, and the
KubeRay RayService embeds it as serveConfigV2. Because every deploy goes through the
declarative path, a change of the model reference alone is a `user_config` update: Serve calls
`reconfigure()` on the live replicas, which load and warm the new model before swapping it in.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from rayline.config import RaylineConfig
from rayline.errors import RaylineError, ResourceError
from rayline.serve.options import DEPLOYMENT, REPLICA_ARG, ReplicaArgs, deployment_options

IMPORT_PATH = "rayline.serve.app:app_builder"
TAKEN_GRACE_S = 3.0  # an unchanged config may keep its deploy time: RUNNING counts after this


def serve_config(cfg: RaylineConfig, model: str | None = None) -> dict:
    """The Serve config of the app. The replicas' plan travels in it by value (`ReplicaArgs`: the
    serve section, the registry's name and absolute root, the alias): the replicas need no config
    file on their node, and what was validated here is what they run."""
    args = ReplicaArgs.from_config(cfg)
    opts = deployment_options(args, model, cfg.serve)
    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": cfg.serve.host, "port": cfg.serve.port, "request_timeout_s": cfg.serve.request_timeout_s},
        "applications": [{
            "name": cfg.serve.app_name,
            "route_prefix": cfg.serve.route_prefix,
            "import_path": IMPORT_PATH,
            "args": {REPLICA_ARG: args.to_json()},
            "deployments": [{"name": DEPLOYMENT, **opts}],
        }],
    }


@dataclass
class Deployment:
    url: str
    model_version: int | None
    app: str

    def summary(self) -> dict:
        return {"stage": "deploy", "url": self.url, "model_version": self.model_version, "app": self.app}


def apply(config: dict, timeout_s: float = 180, progress=lambda m: None) -> None:
    """Start Serve if needed and apply the config (a user_config-only change reconfigures in place).

    A Serve config is declarative: applying it deletes every application deployed from a config
    that it does not name. The applications of others (another team's `serve deploy` on a shared
    cluster) are therefore carried into it as they are deployed now, so rayline's deploy changes
    its own application and nothing else."""
    from ray.serve.schema import ServeDeploySchema

    from rayline.ray_compat import serve_start

    schema = ServeDeploySchema.model_validate(config)
    client = serve_start(http_options=schema.http_options.model_dump(), proxy_location=schema.proxy_location,
                         grpc_options=schema.grpc_options.model_dump())
    ours = {a.name for a in schema.applications}
    others = [app for app in declarative_apps(client.get_serve_details()) if app["name"] not in ours]
    prefixes = {a.route_prefix: a.name for a in schema.applications}
    clash = [f"{a['name']!r} serves {a.get('route_prefix', '/')!r}" for a in others if a.get("route_prefix", "/") in prefixes]
    if clash:
        raise RaylineError(f"another application on this cluster already uses the route prefix of "
                           f"{', '.join(sorted(ours))}: {'; '.join(clash)}. Choose another serve.route_prefix, or "
                           "delete that application (serve.delete) if it is meant to be replaced")
    if others:
        progress(f"deploy: keeping {len(others)} other application(s) as deployed: {', '.join(a['name'] for a in others)}")
        schema = ServeDeploySchema.model_validate({**config, "applications": [*config["applications"], *others]})
    before = {n: a.last_deployed_time_s for n, a in _app_statuses().items()}
    client.deploy_apps(schema)
    _wait_running(sorted(ours), timeout_s, progress, before)


def declarative_apps(details: dict) -> list[dict]:
    """The config of each application now deployed from a Serve config (those a new config would
    delete); applications deployed from Python (serve.run) are not touched by a config."""
    apps = []
    for name, app in (details.get("applications") or {}).items():
        cfg = app.get("deployed_app_config") if isinstance(app, dict) else None
        if cfg:
            apps.append({**cfg, "name": name})
    return apps


def replica_line(app_status) -> str | None:
    """`replicas: 1 running, 1 starting` for an application's status (None before it has any)."""
    counts: dict[str, int] = {}
    for d in getattr(app_status, "deployments", {}).values():
        for state, n in (d.replica_states or {}).items():
            key = str(getattr(state, "value", state)).lower()
            counts[key] = counts.get(key, 0) + n
    return "replicas: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) if counts else None


def _app_statuses() -> dict:
    from ray import serve

    try:
        return dict(serve.status().applications)
    except Exception:  # noqa: BLE001 - Serve not started yet: nothing deployed before
        return {}


def _wait_running(apps: list[str], timeout_s: float, progress=lambda m: None, before: dict | None = None) -> None:
    """Until every app runs the config just applied. Right after the apply, an app can still show
    RUNNING for its previous config (the controller has not taken the new one yet): an app counts
    once its deploy time moved past `before`'s, or after a grace period (an identical config)."""
    from ray import serve

    start, deadline, said = time.time(), time.time() + timeout_s, None
    before = before or {}
    while time.time() < deadline:
        status = serve.status()
        states = {name: status.applications.get(name) for name in apps}
        for name, s in states.items():
            line = replica_line(s) if s is not None else None
            if line and line != said:  # only when it changes: starting -> running, one line each
                progress(f"deploy: {name} {line}")
                said = line
        taken = all(s is not None and (s.last_deployed_time_s != before.get(name) or time.time() - start > TAKEN_GRACE_S)
                    for name, s in states.items())
        if taken and all(s.status == "RUNNING" for s in states.values()):
            return
        failed = {n: s.message for n, s in states.items() if s is not None and s.status == "DEPLOY_FAILED"}
        if failed:
            raise RaylineError(f"deployment failed: {failed}")
        time.sleep(0.5)
    raise RaylineError(f"deployment of {apps} not running after {timeout_s}s: {serve.status().applications}")


def check_replica_resources(cfg: RaylineConfig) -> None:
    """A replica asking for more GPUs than the cluster has would stay PENDING forever (Serve
    retries it quietly): say so at once instead."""
    import ray

    gpus = cfg.serve.gpus_per_replica
    total = ray.cluster_resources().get("GPU", 0.0)
    if gpus > 0 and total < gpus * max(1, cfg.serve.autoscaling.min_replicas):
        raise ResourceError(f"serve.gpus_per_replica={gpus:g} x serve.autoscaling.min_replicas="
                            f"{cfg.serve.autoscaling.min_replicas} needs {gpus * max(1, cfg.serve.autoscaling.min_replicas):g} "
                            f"GPU(s) but the cluster has {total:g}: set serve.gpus_per_replica=0 to serve on CPU")


def base_url(cfg: RaylineConfig) -> str:
    host = "127.0.0.1" if cfg.serve.host in ("0.0.0.0", "::") else cfg.serve.host
    return f"http://{host}:{cfg.serve.port}{cfg.serve.route_prefix.rstrip('/')}"


def wait_ready(url: str, timeout_s: float = 60, version: int | None = None) -> int:
    deadline, last = time.time() + timeout_s, None
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=5) as r:
                v = json.loads(r.read())["model_version"]
                if version is None or v == version:
                    return v
                last = f"serving version {v}, waiting for {version}"
        except (urllib.error.URLError, OSError, ValueError, KeyError) as e:
            last = str(e)
        time.sleep(0.3)
    raise RaylineError(f"{url} is not ready after {timeout_s}s ({last})")


def deploy(cfg: RaylineConfig, model: str | None = None, timeout_s: float = 180, progress=lambda m: None,
           registry=None) -> Deployment:
    """Deploy or update the app; returns once it answers /readyz with the expected version.
    `progress` hears the replicas' states as they change; `registry`: the caller's, if it has one."""
    from rayline.registry import Registry

    registry = registry or Registry.of(cfg)
    arms = [a.alias for a in cfg.serve.traffic] if model is None and cfg.serve.traffic else [str(model or cfg.alias)]
    shadow = [cfg.serve.shadow.alias] if cfg.serve.shadow.alias and cfg.serve.shadow.fraction > 0 else []
    for ref in arms[1:] + shadow:  # every arm and the shadow must exist: fail early, with a clear message
        registry.resolve(ref)
    version = registry.resolve(arms[0])  # the first arm's: what /readyz reports once the app serves
    check_replica_resources(cfg)
    apply(serve_config(cfg, model), timeout_s, progress)
    url = base_url(cfg)
    d = Deployment(url=url, model_version=wait_ready(url, timeout_s, version), app=cfg.serve.app_name)
    progress(f"deploy: version {d.model_version} answering at {url}")
    return d
