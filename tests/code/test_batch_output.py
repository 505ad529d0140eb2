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
