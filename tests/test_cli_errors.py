"""Parser errors (unknown flag, bad choice, missing argument) reach a user as one line, like every other error."""

from __future__ import annotations

import pytest

from tests.helpers import run_cli


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["train", "data", "--out", "run", "--loss", "foo"], ["--loss", "'foo'", "pumlc train -h"]),
        (["train", "data", "--out", "run", "--epochs", "many"], ["--epochs", "integer", "pumlc train -h"]),
        (["eval", "--bogus"], ["--bogus", "pumlc eval -h"]),
        (["stats"], ["PATH", "pumlc stats -h"]),
        (["prepare", "coco", "--out", "p", "--partial", "1.5"], ["--partial", "[0, 1]"]),
    ],
)
def test_parser_errors_are_one_line(args: list[str], names: list[str], tmp_path) -> None:
    done = run_cli(*args, check=False, subprocess_=True)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and lines[0].startswith("pumlc: error: "), done.stderr
    for name in names:
        assert name in lines[0]
    assert done.stdout == ""
