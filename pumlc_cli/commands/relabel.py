"""`pumlc relabel PREPARED --from AUDIT.csv --out NEW`: accept audit suggestions into a new prepared folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from pumlc_cli.help import unit_interval

Kind = Literal["missing", "wrong", "all"]


def relabel(
    data: Annotated[Path, typer.Argument(help="Prepared folder the audit was made on.")],
    audit_csv: Annotated[Path, typer.Option("--from", help="CSV written by `pumlc audit --csv`.")],
    out: Annotated[Path, typer.Option(help="New prepared folder.")],
    accept_top: Annotated[int | None, typer.Option(min=0, help="Accept the K best suggestions of each kind.")] = None,
    min_score: Annotated[
        float | None,
        typer.Option(parser=unit_interval, metavar="FLOAT", help="Accept suggestions with score ≥ S (est. precision)."),
    ] = None,
    kind: Annotated[Kind, typer.Option(help="missing (→ positive), wrong (→ unknown) or all.")] = "missing",
    classes: Annotated[list[str] | None, typer.Option("--classes", help="Only these classes (repeatable).")] = None,
    min_precision: Annotated[
        float,
        typer.Option(
            min=0.0, max=1.0, help="Refuse when the accepted changes' mean score (expected precision) is lower."
        ),
    ] = 0.5,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Replace an existing --out; write even past the safety bounds (scores in-sample or upper bounds, "
            "too many positives, expected precision below --min-precision).",
        ),
    ] = False,
) -> None:
    """Observed labels take the accepted suggestions; truth and the test split stay as they were."""
    from rich.console import Console
    from rich.table import Table

    from pumlc_cli.audit.relabel import Selection, plan_change
    from pumlc_cli.audit.relabel import relabel as do_relabel
    from pumlc_cli.data.prepared import load_prepared
    from pumlc_cli.errors import PumlcError
    from pumlc_cli.outputs import check_output_folder, claim, prepared_inputs

    kinds = ("missing", "wrong") if kind == "all" else (kind,)
    names = tuple(c for item in classes or [] for c in item.split(",") if c)
    target = check_output_folder(out, "--out", inputs=[*prepared_inputs(data), audit_csv], kind="prepared")
    if target.exists() and not force:
        raise PumlcError(f"{target}: already exists (use --force to replace it)")
    prepared = load_prepared(data)
    selection = Selection(kinds, accept_top, min_score, names)
    change = plan_change(prepared, audit_csv, selection)
    typer.echo(change.summary())  # before anything is written, and before a refusal (one line on stderr)
    with claim(target, "pumlc relabel"):
        manifest = do_relabel(prepared, audit_csv, target, selection, change, force, min_precision)
    step = manifest["corruptions"][-1]
    if step["forced_past"]:  # the refusal --force overrode, as the manifest records it
        typer.echo(f"warning: written anyway (--force): {step['forced_past']}", err=True)
    table = Table(title=f"relabelled {out}: {step['accepted']} suggestion(s) accepted", header_style="bold")
    for col in ("class", "added +", "removed +"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for name, counts in step["per_class"].items():
        table.add_row(name, str(counts["added_positives"]), str(counts["removed_positives"]))
    Console().print(table)
    typer.echo(f"next: pumlc stats {out}   (then train on it; the test split is unchanged)")
