"""The `pumlc` command line. Command modules import torch lazily so `--help`, `prepare` and `stats` stay fast."""

from __future__ import annotations

import errno
import sys
from typing import Annotated

import typer

from pumlc_cli.errors import PumlcError
from pumlc_cli.help import CONTEXT, HelpCommand, WorkflowGroup, examples, parser_error_line

# OSErrors that name a problem of the machine or the user's files, not of pumlc: one line, exit 2
ENVIRONMENT_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT})

app = typer.Typer(
    name="pumlc",
    cls=WorkflowGroup,
    help="Multi-label classification from positive labels only (PU-MLC): prepare, corrupt, train, evaluate.",
    epilog=examples(
        "pumlc prepare coco --root coco --out prep --missing 0.7 --strip-negatives",
        "pumlc stats prep",
        "pumlc train prep --out runs/pu",
        "pumlc eval runs/pu",
        "pumlc predict runs/pu photo.jpg",
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
    context_settings=CONTEXT,
)


def _version(value: bool) -> None:
    if value:
        from pumlc_cli.data.prepared import toolkit_version

        typer.echo(f"pumlc {toolkit_version()}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Multi-label classification from positive labels only (PU-MLC): prepare, corrupt, train, evaluate."""


def _register() -> None:
    """Attach every sub-command; each module only defines Typer functions and defers heavy imports."""
    from pumlc_cli.commands import audit, compare, export, predict, prepare, relabel, stats, synth, train
    from pumlc_cli.commands import eval as eval_cmd

    app.command("synth", cls=HelpCommand, epilog=synth.EXAMPLES)(synth.synth)
    app.add_typer(prepare.app, name="prepare")
    app.command("stats", cls=HelpCommand, epilog=stats.EXAMPLES)(stats.stats)
    app.command("train", cls=HelpCommand, epilog=train.EXAMPLES)(train.train)
    app.command("eval", cls=HelpCommand, epilog=eval_cmd.EXAMPLES)(eval_cmd.eval_command)
    app.command("compare", cls=HelpCommand, epilog=compare.EXAMPLES)(compare.compare)
    app.command("predict", cls=HelpCommand, epilog=predict.EXAMPLES)(predict.predict)
    app.command("export", cls=HelpCommand, epilog=export.EXAMPLES)(export.export)
    audit_examples = examples("pumlc audit runs/pu --csv suggestions.csv", "pumlc audit runs/pu --folds 5 --top 20")
    app.command("audit", cls=HelpCommand, epilog=audit_examples)(audit.audit)
    relabel_examples = examples("pumlc relabel prep --from suggestions.csv --accept-top 20 --out prep2")
    app.command("relabel", cls=HelpCommand, epilog=relabel_examples)(relabel.relabel)


_register()


def main() -> None:
    """Entry point: bad input (a file, a value, a flag) becomes one line on stderr and exit code 2; anything
    unexpected (a bug) one line naming a saved traceback file, exit code 1. No worker process outlives it."""
    from pumlc_cli.runtime.workers import end_children

    try:
        _main_inner()
    finally:
        end_children()


def _main_inner() -> None:
    from pumlc_cli.runtime.interrupt import Stopped, stop_on_signals

    try:
        with stop_on_signals():  # a signal unwinds like an error: temp folders and locks go on the way out
            result = app(prog_name="pumlc", standalone_mode=False)
    except Stopped as stop:
        print(f"pumlc: {stop}", file=sys.stderr)
        sys.exit(stop.code)
    except typer.Abort:
        print("pumlc: interrupted", file=sys.stderr)
        sys.exit(130)
    except typer.TyperException as err:  # Typer's own (vendored click) parser and usage errors
        if type(err).__name__ == "NoArgsIsHelpError":  # `pumlc prepare` alone: the help, as asked
            err.show()
        else:
            print(f"pumlc: error: {parser_error_line(err)}", file=sys.stderr)
        sys.exit(err.exit_code)
    except PumlcError as err:
        print(f"pumlc: error: {err}", file=sys.stderr)
        sys.exit(2)
    except OSError as err:  # the environment said no (permissions, read-only or full disk): not a bug
        if err.errno not in ENVIRONMENT_ERRNOS:
            print(f"pumlc: error: {unexpected(err)}", file=sys.stderr)
            sys.exit(1)
        print(f"pumlc: error: {err.filename or 'a file'}: {err.strerror}", file=sys.stderr)
        sys.exit(2)
    except Exception as err:  # the last resort: never a traceback on the terminal
        print(f"pumlc: error: {unexpected(err)}", file=sys.stderr)
        sys.exit(1)
    sys.exit(result if isinstance(result, int) else 0)


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
