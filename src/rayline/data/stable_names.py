"""Output file names that do not change from run to run (Ray Data's default names carry a random
write id). With the pass-2 map in input order (`preserve_order`), the same input gives the same
files, byte for byte, under the same names, so the training shards (split by sorted file name)
and the model trained on them are the same too."""

from __future__ import annotations

from ray.data.datasource import FilenameProvider


class StableNames(FilenameProvider):
    """`part-<write task index>`: a task's index follows the input's order when the map preserves it."""

    def get_filename_for_task(self, write_uuid: str, task_index: int) -> str:
        return f"part-{task_index:06}"
