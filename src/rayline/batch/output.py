"""Where batch predictions may be written, decided before any work starts.

Batch output is staged beside its destination and published with a marker, so a failed run
leaves nothing behind and never a half-written output. Three refusals protect what is already
there: an output that is, holds, or lies inside the input (replacing it would delete input,
or the next read would take predictions for input), and an existing output without
`overwrite` (it is replaced only once the new one is complete).
"""

from __future__ import annotations

import os

import pyarrow.fs as pafs

from rayline.errors import InputError


def location(fs: pafs.FileSystem, path: str) -> tuple[str, str]:
    """(filesystem kind, normalised path): local paths with links resolved, no trailing slash."""
    kind = fs.type_name
    p = os.path.realpath(path) if kind == "local" else path.split("?", 1)[0]
    return kind, p.rstrip("/") or "/"


def overlaps(a: tuple[str, str], b: tuple[str, str]) -> bool:
    """Same place, or one inside the other, on the same kind of filesystem."""
    if a[0] != b[0]:
        return False
    x, y = a[1].rstrip("/") + "/", b[1].rstrip("/") + "/"
    return x.startswith(y) or y.startswith(x)


def check_output(input_loc: tuple[str, str], output_loc: tuple[str, str], output_exists: bool, *,
                 overwrite: bool, shown_input: str, shown_output: str) -> None:
    if overlaps(input_loc, output_loc):
        where = ("is the input" if input_loc[1] == output_loc[1] else
                 "is inside the input" if output_loc[1].startswith(input_loc[1].rstrip("/") + "/") else "contains the input")
        raise InputError(f"--output {shown_output} {where} {shown_input}: writing there could delete or mix with the "
                         f"input; choose an output outside the input")
    if output_exists and not overwrite:
        raise InputError(f"--output {shown_output} already exists; pass --overwrite to replace it (the old output is "
                         f"kept until the new one is complete)")
