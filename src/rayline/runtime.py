"""Connecting to Ray: an embedded local instance by default, an existing cluster with an address.

Stages never call `ray.init` themselves; the CLI, jobs and notebooks open a session here and
the stages use whatever Ray is connected.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

log = logging.getLogger(__name__)


@contextlib.contextmanager
def ray_session(address: str | None = None, *, num_cpus: int | None = None, quiet: bool = True) -> Iterator[None]:
    """Use the connected Ray, attach to `address`, or start an embedded local one.

    Only a Ray started here is shut down on exit. `address` may be "auto", "HOST:PORT" or
    "ray://HOST:10001"; RAY_ADDRESS is honoured when no address is given (as `ray job submit`
    sets it for a job's driver).
    """
    import ray

    if ray.is_initialized():
        yield
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    kwargs: dict = {"logging_level": logging.WARNING if quiet else logging.INFO, "log_to_driver": True}
    if address is None:
        # The embedded instance: no dashboard process (it costs a core on a laptop) unless asked.
        kwargs.update(num_cpus=num_cpus, include_dashboard=False)
        # A job's working dir is uploaded by `ray job submit`; locally the package is importable.
    ray.init(address=address, **kwargs)
    configure_data_context()
    try:
        yield
    finally:
        ray.shutdown()


def configure_data_context() -> None:
    """Ray Data settings rayline relies on (applies to the current driver)."""
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = True
    # Ray's default block size (128 MiB). A map+write task holds its input block and all the
    # output it writes: 256 MiB blocks measured no faster (3.4M rows) but put the 30M-row
    # ingest's peak memory at 7.4-8.1 GiB.
    ctx.target_max_block_size = 128 * 1024 * 1024


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
