"""How every command's help reads: commands in workflow order, no type noise, choices that fit 80 columns.

Why a command class and not per-option metavars: Typer renders a flag as `<bool>`, a string as `<str>` and a
required argument as `{name}`, and long choice lists (`<pu|bce-an|...>`) squeeze the option-name column of the
rich help table until names are cut. Tidying the parameters once, here, keeps every command's options plain.
"""

from __future__ import annotations

from typing import Any, get_args

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

# The order a user meets the commands in; commands not listed (none today) go last.
WORKFLOW = ("synth", "prepare", "stats", "train", "eval", "predict", "export", "audit", "relabel")
# A choice list longer than this moves from the type column into the help text.
MAX_CHOICES_WIDTH = 14
CONTEXT = {"help_option_names": ["-h", "--help"]}


def _tidy(param: Any) -> None:
    """Name arguments in capitals, drop `<bool>` from flags and `<str>` from text options, and move long choice
    lists and number bounds from the narrow type column into the help text."""
    if getattr(param, "_pumlc_tidy", False):
        return
    param._pumlc_tidy = True
    if isinstance(param, TyperArgument) and param.metavar is None:
        param.metavar = param.name.upper()
    if not isinstance(param, TyperOption) or param.metavar is not None:
        return
    if param.is_flag:
        param.metavar = ""
        return
    desc = param.type_descriptor
    if desc.is_ranged:  # `<float range> [0.0<=x<=1.0]` in the type column -> `<float>`, bounds in the help text
        low, high = param.min, param.max
        bounds = f"{low} to {high}" if None not in (low, high) else (f"≥ {low}" if high is None else f"≤ {high}")
        param.help = f"{param.help or ''} ({bounds})".strip()
        param.metavar = f"<{desc.ranged_type_name}>"
        param.min = param.max = None  # display only: Typer validates against the declared bounds
        return
    if desc.is_choice and desc.choices:
        values = [str(getattr(c, "value", c)) for c in desc.choices]
        if len("|".join(values)) > MAX_CHOICES_WIDTH:
            param.metavar = param.name.upper()
            param.help = f"{param.help or ''} One of: {', '.join(values)}.".strip()
    elif desc.annotation is str or (desc.is_list and get_args(desc.annotation) == (str,)):
        param.metavar = "TEXT"


class HelpCommand(TyperCommand):
    """A Typer command whose help and usage line use the tidy parameter names (see module docstring)."""

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)
        for param in params:
            _tidy(param)
        return params

    def format_help(self, ctx: Any, formatter: Any) -> None:
        """Show each `--x/--no-x` pair in the name column, wrappable at the slash: Typer's extra column for the
        `--no-x` half costs the width that otherwise cuts long option names at 80 columns."""
        folded = [(p, p.opts, p.secondary_opts) for p in self.get_params(ctx) if getattr(p, "secondary_opts", None)]
        for param, opts, negatives in folded:
            param.opts, param.secondary_opts = [" / ".join([*opts, *negatives])], []
        try:
            super().format_help(ctx, formatter)
        finally:
            for param, opts, negatives in folded:
                param.opts, param.secondary_opts = opts, negatives

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if isinstance(param, TyperArgument):
                name = param.metavar + ("..." if param.nargs != 1 else "")
                pieces.append(name if param.required else f"[{name}]")
        return pieces


class HelpGroup(TyperGroup):
    """A Typer group whose own options (`--version`, completion) are tidied like a command's."""

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)
        for param in params:
            _tidy(param)
        return params


class WorkflowGroup(HelpGroup):
    """Lists sub-commands in `WORKFLOW` order (Typer lists plain commands before groups such as `prepare`)."""

    def list_commands(self, ctx: Any) -> list[str]:
        names = super().list_commands(ctx)
        rank = {name: i for i, name in enumerate(WORKFLOW)}
        return sorted(names, key=lambda name: rank.get(name, len(rank)))


def examples(*lines: str) -> str:
    """An epilog of example command lines, one per line (rich help joins single newlines, so blank lines)."""
    return "Examples:\n\n" + "\n\n".join(f"  {line}" for line in lines)


def parser_error_line(err: typer.TyperException) -> str:
    """A parser error as one line plus where the command's help is (Typer's boxed form takes five or more)."""
    from pumlc_cli.errors import first_line

    message = first_line(" ".join(err.format_message().replace("Value error, ", "").split()))
    ctx = getattr(err, "ctx", None)
    return f"{message} (see `{ctx.command_path} -h`)" if ctx is not None else message


def unit_interval(text: str) -> float:
    """A score or rate option's value: a number in [0, 1]. `nan` is named as such (a range check would say it is
    above 1)."""
    import math

    try:
        value = float(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a number") from None
    if math.isnan(value):
        raise typer.BadParameter("nan is not a number")
    if not 0.0 <= value <= 1.0:
        raise typer.BadParameter(f"must be between 0 and 1, got {text}")
    return value
