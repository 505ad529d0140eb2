"""Where batch output may go: never the input, inside it, or around it; never over an output unasked."""

import pyarrow.fs as pafs
import pytest

from rayline.batch.output import check_output, location, overlaps
from rayline.errors import InputError

LOCAL = pafs.LocalFileSystem()


@pytest.mark.parametrize("inp,out,expected", [
    ("/d/in", "/d/in", True), ("/d/in", "/d/in/out", True), ("/d/in", "/d", True), ("/d/in/", "/d/in", True),
    ("/d/in", "/d/in2", False), ("/d/in", "/d/out", False), ("/d/in.parquet", "/d/in.parquet.out", False),
])
def test_overlap_is_path_containment_not_string_prefix(inp, out, expected):
    assert overlaps(("local", inp.rstrip("/")), ("local", out.rstrip("/"))) is expected


def test_other_filesystems_and_queries():
    assert not overlaps(("s3", "b/in"), ("local", "b/in"))
    assert location(pafs.LocalFileSystem(), "/tmp/x/") == ("local", "/tmp/x")


def test_links_are_resolved(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "in")
    assert overlaps(location(LOCAL, str(tmp_path / "in")), location(LOCAL, str(tmp_path / "alias" / "out")))


@pytest.mark.parametrize("out,words", [("/d/in", "is the input"), ("/d/in/p", "is inside the input"),
                                       ("/d", "contains the input")])
def test_refusals_name_both_paths(out, words):
    with pytest.raises(InputError, match=f"--output {out} {words} /d/in"):
        check_output(("local", "/d/in"), ("local", out), True, overwrite=True, shown_input="/d/in", shown_output=out)


def test_existing_output_needs_overwrite():
    with pytest.raises(InputError, match="already exists; pass --overwrite"):
        check_output(("local", "/d/in"), ("local", "/d/out"), True, overwrite=False, shown_input="i", shown_output="o")
    check_output(("local", "/d/in"), ("local", "/d/out"), True, overwrite=True, shown_input="i", shown_output="o")
    check_output(("local", "/d/in"), ("local", "/d/out"), False, overwrite=False, shown_input="i", shown_output="o")


def test_staged_parts_keep_what_finished_batches_reported_and_nothing_else(tmp_path):
    """An actor writes each batch's files and reports them; a file written by an attempt that died
    before reporting (Ray ran the batch again elsewhere) is removed; counts come from the footers."""
    import pyarrow as pa

    from rayline.batch.output import PREDICTIONS, QUARANTINE, StagedParts, keep_reported
    from rayline.features.contract import QUARANTINE_SCHEMA
    from rayline.storage import Storage

    parts = StagedParts(Storage(str(tmp_path)), ".tmp-out")
    preds = pa.table({"id": [1, 2, 3], "prediction": [0.1, 0.2, 0.3]})
    first = parts.write(preds, QUARANTINE_SCHEMA.empty_table())
    assert first.num_rows == 1 and first.column("rows").to_pylist() == [3]        # no empty quarantine file
    q = pa.table({n: pa.array(["x"], pa.string()) for n in QUARANTINE_SCHEMA.names})
    second = parts.write(preds.slice(0, 1), q)
    orphan = parts.write(preds, q)                                                # its report never arrived
    reported = first.to_pylist() + second.to_pylist()
    assert {r["part"].split("/")[0] for r in reported} == {PREDICTIONS, QUARANTINE}
    assert keep_reported(parts, reported) == {PREDICTIONS: 4, QUARANTINE: 1}
    left = sorted(str(p.relative_to(tmp_path / ".tmp-out")) for p in (tmp_path / ".tmp-out").rglob("*.parquet"))
    assert left == sorted(r["part"] for r in reported) and not set(orphan.column("part").to_pylist()) & set(left)
    with pytest.raises(RuntimeError, match="not there"):
        keep_reported(parts, reported + [{"part": "predictions/part-gone.parquet", "rows": 1}])
    with pytest.raises(RuntimeError, match="twice"):
        keep_reported(parts, reported + reported[:1])
