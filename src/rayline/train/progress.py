"""Training progress on the driver's console, read from what Ray Train persists.

Workers' own output stays in the session logs (quiet console); the driver follows the run's
checkpoint snapshot (`checkpoint_manager_snapshot.json`, rewritten by Ray Train at each
registered report) and prints one line per new epoch, or per reported round for boosted trees.
Reading the persisted snapshot works the same on local disk and object storage, on a laptop
and on a cluster, and needs nothing from the workers.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

from rayline.storage import Storage

SNAPSHOT = "checkpoint_manager_snapshot.json"


def describe(metrics: dict, total: int, metric: str) -> str:
    value = metrics.get(f"val_{metric}")
    shown = f"val_{metric} {value:.4f}" if isinstance(value, (int, float)) else ""
    if "round" in metrics:
        return f"train: round {metrics['round']}/{total} {shown} (best round {metrics.get('best_round')})"
    rate = metrics.get("train_samples_per_s")
    return (f"train: epoch {metrics.get('epoch')}/{total} {shown} train_loss {metrics.get('train_loss', float('nan')):.4f}"
            + (f" ({rate:,.0f} samples/s)" if isinstance(rate, (int, float)) else ""))


@contextlib.contextmanager
def follow(storage: Storage, run_dir: tuple[str, ...], total: int, metric: str, progress: Callable[[str], None],
           every_s: float = 2.0) -> Iterator[None]:
    """While the block runs, print each new report of the run at `run_dir`."""
    stop = threading.Event()
    seen: set = set()

    def check() -> None:
        try:
            latest = (storage.read_json(*run_dir, SNAPSHOT).get("latest_checkpoint_result") or {})
        except Exception:  # noqa: BLE001 - not written yet, or mid-rewrite: next time
            return
        m = latest.get("metrics") or {}
        key = (m.get("attempt"), m.get("epoch"), m.get("round"))
        if m and key not in seen:
            seen.add(key)
            progress(describe(m, total, metric))

    def poll() -> None:
        while not stop.wait(every_s):
            check()

    t = threading.Thread(target=poll, name="rayline-train-progress", daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join(timeout=every_s + 1)
        check()  # the last report, written just before fit() returned
