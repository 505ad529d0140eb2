"""`rayline ...`: a thin shell over the stage functions.

`runner` is the one way a command runs (config -> storage -> Ray session -> stage -> summary,
errors as one message and an exit code); `commands` holds the commands, each a few lines
handing a stage to the runner; `render` is how their summaries read on a terminal.
"""

from rayline.cli.commands import app


def main() -> None:
    app()


__all__ = ["app", "main"]
