"""Every use of a Ray internal, in one place.

rayline pins `ray==2.60.0` exactly because of what is below: private modules, a private method
it overrides, and environment switches Ray reads but does not document as public. Each entry
says what it relies on; `tests/code/test_ray_compat.py` checks every one against the installed
Ray and fails naming the hook, so an upgrade that moves one is caught before anything runs.

Importing this module imports nothing from Ray (the HAProxy launcher reads the names here at
every HAProxy start and must stay light).
"""

from __future__ import annotations

# ---------------------------------------------------------------- environment switches
# Read by Ray Train's controller from the driver's environment when `fit()` starts it.
TRAIN_CONTROLLER_POLL = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"     # how often it checks its workers (2 s default)
TRAIN_PREEMPTION_WATCHER = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"  # "0": no drain-watching actor
# Read by Serve's processes (controller, proxies, replicas) when they start.
SERVE_HAPROXY = "RAY_SERVE_ENABLE_HA_PROXY"                     # HAProxy ingress instead of the Python proxy
SERVE_USER_CODE_THREAD = "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD"  # "0": handlers on the replica's main loop
SERVE_HAPROXY_RETRY_ON = "RAY_SERVE_HAPROXY_RETRY_ON"           # HAProxy's retry-on for requests to replicas
SERVE_HAPROXY_ERROR_LIMIT = "RAY_SERVE_HAPROXY_OBSERVE_ERROR_LIMIT"  # failed connections before a replica is out
SERVE_DRAINING_PERIOD = "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"  # a stopping replica keeps accepting
SERVE_HAPROXY_STATS_PORT = "RAY_SERVE_HAPROXY_STATS_PORT"       # fixed 8404 by default: two Rays collide
SERVE_HAPROXY_METRICS_PORT = "RAY_SERVE_HAPROXY_METRICS_PORT"   # fixed 9101 by default
SERVE_HAPROXY_BINARY = "RAY_SERVE_HAPROXY_BINARY_PATH"          # the program Serve runs as HAProxy
# Read by Ray Data's Parquet listing (in the task that lists the files, so from the workers'
# environment): the footer-reading actors it starts for every read, 32 by default.
DATA_PARQUET_FOOTER_ACTORS = "RAY_DATA_PARQUET_FOOTER_NUM_ACTORS"

ENV_SWITCHES = (TRAIN_CONTROLLER_POLL, TRAIN_PREEMPTION_WATCHER, SERVE_HAPROXY, SERVE_USER_CODE_THREAD,
                SERVE_HAPROXY_RETRY_ON, SERVE_HAPROXY_ERROR_LIMIT, SERVE_DRAINING_PERIOD, SERVE_HAPROXY_STATS_PORT,
                SERVE_HAPROXY_METRICS_PORT, SERVE_HAPROXY_BINARY, DATA_PARQUET_FOOTER_ACTORS)

# Ray Train's default callbacks rayline may leave out, by class name (ray.train.v2).
TRAIN_DATASETS_CALLBACK = "DatasetsCallback"
TRAIN_PG_CLEANER_CALLBACK = "PlacementGroupCleanerCallback"
# The HTTP frontend's section in the HAProxy config Serve writes (its template's name).
SERVE_HAPROXY_FRONTEND = "frontend http_frontend"


# ---------------------------------------------------------------- private APIs
def global_node():
    """The node this process started, if it started one (`ray._private.worker._global_node`: set by
    `ray.init()` without an address, None when attached to a cluster)."""
    import ray

    return getattr(ray._private.worker, "_global_node", None)


def session_dir() -> str:
    """This node's Ray session directory (`global_worker.node.get_session_dir_path()`; raises when
    attached through Ray Client or not connected)."""
    import ray

    return ray._private.worker.global_worker.node.get_session_dir_path()


def serve_start(**options):
    """Start Serve (or get its running controller) without deploying anything: the client the
    declarative `deploy_apps` is called on, as the dashboard's REST endpoint does
    (`ray.serve._private.api.serve_start`)."""
    from ray.serve._private.api import serve_start as start

    return start(**options)


def cpus_per_node() -> list[tuple[float, float]]:
    """(free, total) CPUs of each live node with CPUs (`ray._private.state`'s
    `available_resources_per_node` and `total_resources_per_node`: DeveloperAPIs that `ray`
    does not export; the GCS's view, refreshed as raylets report). Where they cannot answer (a
    Ray Client connection has no GCS client in this process), every live node's CPUs from the
    public `ray.nodes()`, as if all were free."""
    import ray

    try:
        from ray._private import state

        totals, free = state.total_resources_per_node(), state.available_resources_per_node()
    except Exception:  # noqa: BLE001 - not connected the way the private API needs
        return [(float(n["Resources"]["CPU"]),) * 2 for n in ray.nodes()
                if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) > 0]
    return [(float(free.get(node, {}).get("CPU", 0.0)), float(res["CPU"]))
            for node, res in totals.items() if res.get("CPU", 0) > 0]


def data_parallel_trainer() -> type:
    """Ray Train's DataParallelTrainer (`ray.train.v2.api.data_parallel_trainer`: the class every
    V2 trainer extends, exported by no public module), for a trainer given its backend config:
    the xgboost family's (`train.boosted_workers`) needs none of `ray.train.xgboost`, whose import
    imports xgboost."""
    from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

    return DataParallelTrainer


def without_default_callbacks(trainer_cls: type, drop: frozenset[str]) -> type:
    """`trainer_cls` whose default callbacks (`DataParallelTrainer._create_default_callbacks`, a
    private method) leave out those whose class names are in `drop`."""
    if not drop:
        return trainer_cls

    class Lean(trainer_cls):
        def _create_default_callbacks(self):
            return [cb for cb in super()._create_default_callbacks() if type(cb).__name__ not in drop]

    Lean.__name__ = Lean.__qualname__ = trainer_cls.__name__
    return Lean
