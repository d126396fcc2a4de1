"""The `pumlc` command line. Command modules import torch lazily so `--help`, `prepare` and `stats` stay fast."""

from __future__ import annotations

import sys

import typer

from pumlc_cli.errors import PumlcError

app = typer.Typer(
    name="pumlc",
    help="Multi-label classification from positive labels only (PU-MLC): prepare, corrupt, train, evaluate.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _register() -> None:
    """Attach every sub-command; each module only defines Typer functions and defers heavy imports."""
    from pumlc_cli.commands import audit, predict, prepare, relabel, stats, synth, train
    from pumlc_cli.commands import eval as eval_cmd

    app.add_typer(prepare.app, name="prepare")
    app.command("stats")(stats.stats)
    app.command("synth")(synth.synth)
    app.command("train")(train.train)
    app.command("eval")(eval_cmd.eval_command)
    app.command("predict")(predict.predict)
    app.command("audit")(audit.audit)
    app.command("relabel")(relabel.relabel)


_register()


def main() -> None:
    """Entry point: bad input becomes one line on stderr and exit code 2; anything unexpected (a bug) one line
    naming a saved traceback file, exit code 1."""
    try:
        app(standalone_mode=True)
    except PumlcError as err:
        print(f"pumlc: error: {err}", file=sys.stderr)
        sys.exit(2)
    except Exception as err:  # the last resort: never a traceback on the terminal
        print(f"pumlc: error: {unexpected(err)}", file=sys.stderr)
        sys.exit(1)


def unexpected(err: BaseException) -> str:
    """Save the traceback to a file and describe the error in one line that names it."""
    import os
    import tempfile
    import time
    import traceback

    from pumlc_cli.errors import first_line

    text = "".join(traceback.format_exception(err))
    name = f"pumlc-traceback-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.txt"
    path = os.path.join(tempfile.gettempdir(), name)
    try:
        with open(path, "x", encoding="utf-8") as fh:
            fh.write(f"pumlc {' '.join(sys.argv[1:])}\n\n{text}")
        saved = f"traceback saved to {path}"
    except OSError:
        saved = "the traceback could not be saved"
    return f"unexpected {type(err).__name__}: {first_line(str(err)) or '(no message)'} (a bug; {saved})"
