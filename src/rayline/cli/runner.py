"""The one way a command runs: config (+ --set) -> storage -> a Ray session if the stage needs
one -> the stage -> its summary, printed as text or one JSON line; errors become one message
and an exit code, never a traceback."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import typer

from rayline.errors import RaylineError

if TYPE_CHECKING:
    from rayline.config import RaylineConfig
    from rayline.storage import Storage

Stage = Callable[["RaylineConfig", "Storage"], Any]
Render = Callable[[Any], None]


def run_body(fn: Callable[[], Any], as_json: bool, render: Render | None = None) -> None:
    """Run a command body; print its summary; map errors to clean messages and exit codes."""
    try:
        summary = fn()
    except RaylineError as e:
        typer.echo(f"error: {e}", err=True)
        if as_json:
            typer.echo(json.dumps({"ok": False, "error": str(e)}))
        raise typer.Exit(e.exit_code) from None
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(130) from None
    except Exception as e:  # noqa: BLE001 - last line of defence for a CLI
        if os.environ.get("RAYLINE_DEBUG"):
            traceback.print_exc()
        typer.echo(f"internal error: {type(e).__name__}: {e}\n(set RAYLINE_DEBUG=1 for the traceback)", err=True)
        if as_json:
            typer.echo(json.dumps({"ok": False, "error": f"{type(e).__name__}: {e}"}))
        raise typer.Exit(1) from None
    if summary is None:
        return
    if as_json:
        sys.stdout.flush()
        typer.echo(json.dumps({"ok": True, **summary}, default=str))
    elif render is not None:
        render(summary)
    else:
        typer.echo(json.dumps(summary, indent=2, default=str))


def load(config: str, overrides: list[str] | None) -> "RaylineConfig":
    from rayline.config import load_config

    return load_config(config, overrides or [])


def run_stage(config: str, overrides: list[str] | None, as_json: bool, stage: Stage, render: Render | None = None,
              *, ray: bool = False, address: str | None = None, serving: bool = False) -> None:
    """A command over a config: `stage(cfg, storage)` inside a Ray session when `ray` (the embedded
    one unless `address`; `serving` starts it with the configured Serve ingress)."""
    def body():
        from rayline import storage as storage_io

        cfg = load(config, overrides)
        storage = storage_io.Storage(cfg.storage.root)
        if not ray:
            return stage(cfg, storage)
        from rayline.runtime import ray_session

        env = None
        if serving:
            from rayline.serve.ingress import ingress_env

            env = ingress_env(cfg.serve)
        with ray_session(address, env=env), live_display(live_wanted(as_json)):
            return stage(cfg, storage)
    run_body(body, as_json, render)


# ------------------------------------------------------------------ progress
class _Live:
    """A terminal's live line: each progress line is printed once, and a spinner below them shows
    the latest one and the seconds since the command began (ticking between lines)."""

    def __init__(self, console, status):
        self.console, self.status, self.t0, self.last = console, status, time.monotonic(), "starting"
        status.update(self)

    def __rich__(self):
        from rich.text import Text

        line = Text(f"{time.monotonic() - self.t0:4.0f}s  ", style="dim", no_wrap=True, overflow="ellipsis")
        return line.append(self.last)

    def update(self, msg: str) -> None:
        self.console.print(msg, markup=False, highlight=False)
        self.last = msg


_live: _Live | None = None


def live_wanted(as_json: bool) -> bool:
    """Only for a person at a terminal: plain lines for --json, pipes, files, CI and --verbose
    (whose interleaved Ray logs a redrawn line would garble)."""
    return not as_json and sys.stderr.isatty() and os.environ.get("TERM") != "dumb" \
        and os.environ.get("RAYLINE_VERBOSE", "") in ("", "0")


@contextlib.contextmanager
def live_display(enabled: bool, console=None) -> Iterator[None]:
    global _live
    if not enabled:
        yield
        return
    from rich.console import Console

    console = console or Console(stderr=True)
    with console.status("starting", spinner="dots") as status:
        _live = _Live(console, status)
        try:
            yield
        finally:
            _live = None


def end_live() -> None:
    """Stop the live line (a command that goes on to serve until Ctrl-C has nothing to animate)."""
    global _live
    if _live is not None:
        _live.status.stop()
        _live = None


def progress(msg: str) -> None:
    """Stage progress: one line on stderr (stdout holds the summary), under a live spinner in a
    terminal."""
    if _live is not None:
        _live.update(msg)
    else:
        typer.echo(msg, err=True)
