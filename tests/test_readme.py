"""The README's sample sessions run: every `$ pumlc …` line of its console blocks, in order, on the synth data.

They are all synth-based and small, so the test replays them as written (in a fresh folder) and checks each
succeeds, or exits with the code its `# exit N` comment shows (a refusal the README demonstrates); the `stats`
sample, which is deterministic, must also print the lines the README shows, and a refusal the line it shows.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from tests.helpers import run_cli

README = Path(__file__).resolve().parent.parent / "README.md"


def console_sessions(text: str) -> list[tuple[list[str], list[str], int]]:
    """(argv after `pumlc`, the output lines shown under it, the exit code) for each `$ pumlc` line of the console
    blocks; the code is 0 unless the line ends in a `# exit N` comment."""
    sessions: list[tuple[list[str], list[str], int]] = []
    for block in re.findall(r"```console\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            if line.startswith("$ "):
                argv = shlex.split(line[2:], comments=True)
                code = re.search(r"#\s*exit (\d+)\s*$", line)
                sessions.append((argv[1:] if argv[0] == "pumlc" else [], [], int(code[1]) if code else 0))
            elif sessions and sessions[-1][0]:
                sessions[-1][1].append(line.rstrip())
    return [s for s in sessions if s[0]]


@pytest.mark.slow
def test_readme_console_sessions_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sessions = console_sessions(README.read_text(encoding="utf-8"))
    verbs = [argv[0] for argv, _, _ in sessions]
    assert {"synth", "prepare", "stats", "train", "audit", "relabel"} <= set(verbs), verbs
    monkeypatch.chdir(tmp_path)
    for argv, shown, code in sessions:
        done = run_cli(*argv, check=False)
        assert done.returncode == code, f"pumlc {shlex.join(argv)}: {done.stderr[-2000:]}"
        if code:  # a refusal: the one error line the README shows
            assert [x for x in shown if x.startswith("pumlc: error: ")] == done.stderr.strip().splitlines()
        if argv[0] == "stats":  # deterministic: the README's lines are what it prints
            printed = {line.rstrip() for line in done.stdout.splitlines()}
            missing = [line for line in shown if line and line != "..." and line not in printed]
            assert not missing, f"pumlc {shlex.join(argv)} no longer prints: {missing[:5]}"


def test_console_sessions_are_parsed() -> None:
    text = (
        "```console\n$ pumlc stats p   # comment\n a line\n$ ls\nno\n$ pumlc x   # exit 2\n```\n```bash\npumlc y\n```\n"
    )
    assert console_sessions(text) == [(["stats", "p"], [" a line"], 0), (["x"], [], 2)]
