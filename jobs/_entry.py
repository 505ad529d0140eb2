"""Shared shell for the Ray Job entry points: the same CLI, run as a job driver.

`ray job submit` starts the driver with RAY_ADDRESS set, so rayline attaches to the cluster
instead of starting an embedded Ray. Failures exit non-zero with the CLI's one-line message.
"""

from __future__ import annotations

import os
import sys


def main(command: list[str]) -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    src = os.path.join(os.path.dirname(here), "src")
    if os.path.isdir(src) and src not in sys.path:
        sys.path.insert(0, src)  # the job's working_dir carries the source tree
    from rayline.cli import app

    sys.argv = ["rayline", *command, *sys.argv[1:]]
    app()
