"""`rayline data synth`: flights-like shards of any size, streamed shard by shard."""

import pyarrow.parquet as pq

from rayline.data.synth import synth_flights


def test_synth_writes_shards_with_the_flights_schema(tmp_path):
    out = synth_flights(2500, str(tmp_path / "synth"), shard_rows=1000, seed=1)
    files = sorted((tmp_path / "synth").glob("part-*.parquet"))
    assert (out.rows, out.shards, len(files)) == (2500, 3, 3)
    assert [pq.ParquetFile(f).metadata.num_rows for f in files] == [1000, 1000, 500]
    schema = pq.read_schema(files[0])
    assert {"dep_delay", "origin", "time_hour", "tailnum", "dest"} <= set(schema.names)
    assert not (tmp_path / "synth" / "_real").exists()  # the scratch copy of the real table is gone
    again = synth_flights(2500, str(tmp_path / "again"), shard_rows=1000, seed=1)
    assert pq.read_table(tmp_path / "again").equals(pq.read_table(tmp_path / "synth")) and again.rows == 2500
