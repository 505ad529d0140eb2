"""Connecting to Ray: an embedded local instance by default, an existing cluster with an address.

Stages never call `ray.init` themselves; the CLI, jobs and notebooks open a session here and
the stages use whatever Ray is connected.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator

from rayline import ray_compat

log = logging.getLogger(__name__)


def verbose() -> bool:
    """`--verbose` (RAYLINE_VERBOSE=1): Ray's, Ray Data's and Serve's own logs on the console."""
    return os.environ.get("RAYLINE_VERBOSE", "") not in ("", "0")


def embedded_env(num_cpus: int | None = None) -> dict[str, str]:
    """Environment for an embedded Ray (one machine, local files): Ray Data's Parquet listing
    starts 32 footer-reading actors for every read, sized for object storage; on a laptop's
    cores that costs ~0.8 s a read (2.6 s the first). One per core, at least 2, at most Ray's 32.
    A cluster keeps Ray's default."""
    from rayline import ray_compat

    cores = num_cpus or os.cpu_count() or 2
    return {ray_compat.DATA_PARQUET_FOOTER_ACTORS: str(min(32, max(2, int(cores))))}


@contextlib.contextmanager
def ray_session(address: str | None = None, *, num_cpus: int | None = None, quiet: bool | None = None,
                env: dict[str, str] | None = None) -> Iterator[None]:
    """Use the connected Ray, attach to `address`, or start an embedded local one.

    Only a Ray started here is shut down on exit. `address` may be "auto", "HOST:PORT" or
    "ray://HOST:10001"; RAY_ADDRESS is honoured when no address is given (as `ray job submit`
    sets it for a job's driver). Quiet (the default unless `--verbose`): workers' output, Ray
    Data's progress and Serve's logs stay in the session's log files (path printed once) and the
    console shows rayline's own progress. `env` is set for an embedded Ray before it starts (its
    processes inherit it; a variable already set by the user wins); a cluster has its own.
    """
    import ray

    if ray.is_initialized():
        yield
        return
    quiet = not verbose() if quiet is None else quiet
    address = address or os.environ.get("RAY_ADDRESS") or None
    kwargs: dict = {"logging_level": logging.ERROR if quiet else logging.INFO, "log_to_driver": not quiet}
    if address is None:
        # The embedded instance (see `embedded`). Its dashboard listens on 127.0.0.1 only.
        kwargs.update(num_cpus=num_cpus, include_dashboard=True, dashboard_host="127.0.0.1")
        for k, v in {**embedded_env(num_cpus), **(env or {})}.items():
            os.environ.setdefault(k, v)
        # A job's working dir is uploaded by `ray job submit`; locally the package is importable.
    ray.init(address=address, **kwargs)
    configure_data_context(progress_bars=not quiet)
    if quiet:
        _quiet_loggers()
        log_dir = session_logs()
        if log_dir:
            print(f"ray: logs in {log_dir} (--verbose shows them here)", file=sys.stderr)
    try:
        yield
    finally:
        ray.shutdown()


def embedded_ray_alive() -> bool:
    """False when this process started Ray and its GCS or raylet has exited (a signal sent to
    the whole process group reaches them with this process). True otherwise, attached to a
    cluster included (nothing here to tell)."""
    import psutil

    if not embedded():
        return True
    try:
        kids = {p.name(): p.status() for p in psutil.Process().children() if p.name() in ("gcs_server", "raylet")}
    except psutil.Error:
        return True
    return len(kids) == 2 and psutil.STATUS_ZOMBIE not in kids.values()


def end_embedded_processes(grace_s: float = 5.0) -> None:
    """SIGTERM to every process this one started (the embedded Ray's, and through them Serve's
    actors and HAProxy), SIGKILL to those still running after `grace_s`. For an embedded Ray that
    is already going down: nothing it started may outlive this process."""
    import psutil

    try:
        procs = psutil.Process().children(recursive=True)
    except psutil.Error:
        return
    stop_processes(procs, grace_s)


def stop_processes(procs: list, grace_s: float = 10.0) -> None:
    """SIGTERM to these processes (psutil.Process objects), SIGKILL to those still running after
    `grace_s`; ones already gone are skipped. How rayline, its tests and benchmarks end what they
    started: by PID, never Ray's stop-everything command."""
    import psutil

    for p in procs:
        try:
            p.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass


def embedded() -> bool:
    """True when this process started the Ray it is connected to (`ray_session` without an
    address): a one-node cluster that ends with this process."""
    import ray

    node = ray_compat.global_node()
    return bool(ray.is_initialized() and node is not None and getattr(node, "head", False))


def _quiet_loggers() -> None:
    for name in ("ray", "ray.data", "ray.train", "ray.tune", "ray.serve"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # Serve resets its logger's level when it starts (and then says "Started Serve in namespace"):
    # a filter on the logger outlives that.
    serve_log = logging.getLogger("ray.serve")
    if _errors_only not in serve_log.filters:
        serve_log.addFilter(_errors_only)


def _errors_only(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.ERROR


def session_logs() -> str | None:
    """The Ray session's log directory on this node (workers' output lands there), or None."""
    try:
        return os.path.join(ray_compat.session_dir(), "logs")
    except Exception:  # noqa: BLE001 - attached through Ray Client or an older layout: no path to show
        return None


def configure_data_context(progress_bars: bool = True) -> None:
    """Ray Data settings rayline relies on (applies to the current driver)."""
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = progress_bars
    ctx.print_on_execution_start = progress_bars
    # Ray's default block size (128 MiB). A map+write task holds its input block and all the
    # output it writes: 256 MiB blocks measured no faster (3.4M rows) but put the 30M-row
    # ingest's peak memory at 7.4-8.1 GiB.
    ctx.target_max_block_size = 128 * 1024 * 1024


@contextlib.contextmanager
def ordered_data():
    """Ray Data executions started inside keep their input's order: blocks are batched, mapped
    and written in the order they were read, not the order tasks finish, so the same input
    gives the same batches, statistics and files (a repeatable ingest)."""
    from ray.data import DataContext

    options = DataContext.get_current().execution_options
    before = options.preserve_order
    options.preserve_order = True
    try:
        yield
    finally:
        options.preserve_order = before


def free_port() -> int:
    """A free TCP port on 127.0.0.1 outside Ray's worker port range (10002-19999). A fixed port
    fails to bind for ~60 s after a load test leaves its sockets in TIME_WAIT."""
    import socket

    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if not 10002 <= port <= 19999:
            return port
