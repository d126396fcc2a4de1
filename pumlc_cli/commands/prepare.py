"""`pumlc prepare coco|voc|csv|openimages`: read annotations, corrupt the training labels, write a prepared folder.

Only numpy/pandas/pyarrow are imported here (no torch), so preparing data stays fast.
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_type_hints

import typer

from pumlc_cli.atomic import remove_stale
from pumlc_cli.data.corrupt import CorruptionSpec, check_seed
from pumlc_cli.data.prepared import WriteOptions, prepare_dataset
from pumlc_cli.errors import PumlcError
from pumlc_cli.help import CONTEXT, HelpCommand, HelpGroup, examples

if TYPE_CHECKING:
    from pumlc_cli.data.readers import LabelTable

EXAMPLES = {
    "coco": (
        "pumlc prepare coco --root coco --out prep --missing 0.7 --strip-negatives",
        "pumlc prepare coco --train-ann train.json --test-ann val.json --out prep",
    ),
    "voc": ("pumlc prepare voc --root VOCdevkit/VOC2007 --out prep --partial 0.5",),
    "csv": (
        "pumlc prepare csv --train train.csv --test test.csv --images imgs --out prep",
        "pumlc prepare csv --train positives_only.csv --images imgs --out prep --strip-negatives",
    ),
    "openimages": (
        "pumlc prepare openimages --root openimages --out prep",
        "pumlc prepare openimages --root openimages --out prep --images-optional --machine-labels 0.9",
    ),
}


class FormatGroup(HelpGroup):
    """`pumlc prepare --partial 0.3` names the format commands instead of answering "No such option"."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        first = args[0] if args else ""
        if first.startswith("-") and first not in CONTEXT["help_option_names"]:
            raise PumlcError(
                f"prepare {first}: name the format first: pumlc prepare coco|voc|csv|openimages {' '.join(args)} "
                "(see pumlc prepare -h)"
            )
        return super().parse_args(ctx, args)


app = typer.Typer(
    cls=FormatGroup,
    help="Read annotations (COCO, VOC, CSV or Open Images), corrupt the training labels, write a prepared folder.",
    epilog=examples(*(lines[0] for lines in EXAMPLES.values())),
    no_args_is_help=True,
    context_settings=CONTEXT,
)

# `--root` looks for these COCO releases in this order (2014 is the paper's).
COCO_YEARS = ("2014", "2017")
_C = "Corruption of train (and val) labels"
_S = "Splits and policies"

Out = Annotated[Path, typer.Option("--out", "-o", help="Prepared folder to create (refused if it exists).")]
Partial = Annotated[
    float | None,
    typer.Option(
        help="Keep each (image, class) label known with probability P (HCP / PU-MLC mask).",
        rich_help_panel=_C,
    ),
]
Missing = Annotated[
    float | None,
    typer.Option(
        help="Hide each (image, class) label with probability M: the same mask as --partial 1-M.",
        rich_help_panel=_C,
    ),
]
SinglePositive = Annotated[
    bool, typer.Option("--single-positive", help="Keep one observed positive per image.", rich_help_panel=_C)
]
DropPositives = Annotated[
    float | None,
    typer.Option(help="Each observed positive becomes unknown with probability R.", rich_help_panel=_C),
]
NoiseFn = Annotated[
    float, typer.Option(help="A true positive is annotated negative with probability R.", rich_help_panel=_C)
]
NoiseFp = Annotated[
    float, typer.Option(help="A true negative is annotated positive with probability R.", rich_help_panel=_C)
]
NoiseFile = Annotated[
    Path | None,
    typer.Option(
        help="CSV 'class,fn,fp' with per-class noise rates (override --noise-fn/--noise-fp).",
        rich_help_panel=_C,
    ),
]
StripNegatives = Annotated[
    bool,
    typer.Option(
        "--strip-negatives",
        help="Every observed negative becomes unknown (positive-unlabeled).",
        rich_help_panel=_C,
    ),
]
Seed = Annotated[int, typer.Option(help="Seed of every random step (0 reproduces the HCP / PU-MLC mask).")]
ValFraction = Annotated[
    float, typer.Option(help="Share of the training file held out as validation.", rich_help_panel=_S)
]
CleanVal = Annotated[
    bool,
    typer.Option(
        "--clean-val",
        help="Validation keeps the true labels (default: corrupted like train).",
        rich_help_panel=_S,
    ),
]
EmptyImages = Annotated[
    Literal["keep", "drop"], typer.Option(help="Images without any annotation.", rich_help_panel=_S)
]
CheckImages = Annotated[
    bool,
    typer.Option("--check-images", help="Verify that every listed image exists and opens.", rich_help_panel=_S),
]
Force = Annotated[bool, typer.Option("--force", help="Replace an existing output folder.")]
_I = "Image cache"
CacheSize = Annotated[
    int | None,
    typer.Option(
        help="Also write every image with its shorter side resized to S (JPEG, never upscaled) under OUT/images; "
        "training and evaluation then read these.",
        rich_help_panel=_I,
    ),
]
CacheWorkers = Annotated[
    int | None, typer.Option(help="Processes that write the image cache (default: cores).", rich_help_panel=_I)
]


def _partial(partial: float | None, missing: float | None) -> float | None:
    """`--missing M` is `--partial 1-M`, recorded as that partial step (rounded so 1-0.7 is 0.3, the same mask)."""
    if missing is None:
        return partial
    if partial is not None:
        raise PumlcError("give --partial or --missing, not both (--missing M means --partial 1-M)")
    if not 0.0 <= missing <= 1.0:
        raise PumlcError(f"--missing must be within [0, 1], got {missing}")
    return round(1.0 - missing, 12)


def _precheck(out: Path, options: WriteOptions) -> None:
    """Cheap checks before any file is read."""
    from pumlc_cli.data.image_cache import check_cache_size

    check_seed(options.seed)
    check_cache_size(options.cache_size, options.cache_workers)
    if not 0.0 <= options.val_fraction < 1.0:
        raise PumlcError(f"--val-fraction must be within [0, 1), got {options.val_fraction}")
    if out.exists() and not options.force:
        raise PumlcError(f"{out}: already exists (use --force to replace it)")


def _prepare(
    read: Callable[[], LabelTable],
    out: Path,
    spec: CorruptionSpec,
    options: WriteOptions,
    inputs: list[Path | str | None],
) -> None:
    """The shared tail of every `prepare` command: check the options and the output, claim the output, then
    read, corrupt and write. A signal or an error leaves no temporary folder behind."""
    from pumlc_cli.outputs import check_not_input, check_output_folder, claim, dataset_inputs
    from pumlc_cli.runtime.interrupt import Stopped, stop_on_signals

    spec.validate()
    target = check_output_folder(out, "--out", inputs=[*inputs, spec.noise_file], kind="prepared")
    _precheck(out, options)
    try:
        with stop_on_signals(), claim(target, "pumlc prepare"):
            remove_stale(target)
            table = read()
            sources = [s["path"] for s in table.sources]
            check_not_input(target, "--out", dataset_inputs(table.image_root, table.image_dirs, sources))
            _summary(target, prepare_dataset(table, target, spec, options))
    except Stopped as stop:
        print(f"pumlc: {stop}; nothing was written to {target}", file=sys.stderr)
        raise typer.Exit(stop.code) from None


def _summary(out: Path, manifest: dict) -> None:
    from rich.table import Table

    from pumlc_cli.textout import table_console

    counts = manifest["counts"]
    tab = Table(show_header=True, header_style="bold")
    tab.add_column("split")
    tab.add_column("images", justify="right")
    for s in ("train", "val", "test"):
        tab.add_row(s, str(counts[s]))
    console = table_console()
    console.print(f"prepared {out}", highlight=False)
    console.print(tab)
    src = manifest["source"]
    console.print(
        f"{len(manifest['classes'])} classes ({src.get('class_source')}), "
        f"{counts['empty_in_source']} empty image(s) {'dropped' if counts['dropped_empty'] else 'kept'}; "
        f"images under {manifest['image_root']}"
    )
    labels = manifest["labels"]
    files = manifest["policies"]["image_files"]
    console.print(
        f"{counts['label_entries']:,} label entries stored, every other label {labels['absent_truth']} in truth; "
        f"image files {files}",
        highlight=False,
    )
    cache = manifest.get("image_cache")
    if cache:
        console.print(f"image cache: shorter side {cache['shorter_side']} px under {out / cache['dir']}")
    steps = manifest["corruptions"]
    if steps:
        desc = []
        for st in steps:
            params = {k: v for k, v in st.items() if k in ("fn", "fp", "p", "r")}
            desc.append(st["step"] + ("(" + ", ".join(f"{k}={v}" for k, v in params.items()) + ")" if params else ""))
        where = " + ".join(manifest["corrupted_splits"])
        console.print(f"corruptions on {where} (seed {manifest['seed']}): " + " -> ".join(desc))
    else:
        console.print("no corruption: observed labels equal the truth")
    if not counts["test"]:
        console.print("no test split (no test file given or found): evaluate with pumlc eval RUN --split val")
    console.print(f"next: pumlc stats {out}")


def _shared(
    *,
    partial: Partial = None,
    missing: Missing = None,
    single_positive: SinglePositive = False,
    drop_positives: DropPositives = None,
    noise_fn: NoiseFn = 0.0,
    noise_fp: NoiseFp = 0.0,
    noise_file: NoiseFile = None,
    strip_negatives: StripNegatives = False,
    seed: Seed = 0,
    val_fraction: ValFraction = 0.1,
    clean_val: CleanVal = False,
    empty_images: EmptyImages = "keep",
    check_images: CheckImages = False,
    force: Force = False,
    cache_size: CacheSize = None,
    cache_workers: CacheWorkers = None,
) -> tuple[CorruptionSpec, WriteOptions]:
    """The options every format command takes, as the corruption of the training labels and the write options."""
    spec = CorruptionSpec(
        partial=_partial(partial, missing),
        single_positive=single_positive,
        drop_positives=drop_positives,
        noise_fn=noise_fn,
        noise_fp=noise_fp,
        noise_file=noise_file,
        strip_negatives=strip_negatives,
    )
    options = WriteOptions(
        seed=seed,
        val_fraction=val_fraction,
        clean_val=clean_val,
        empty_images=empty_images,
        check_images=check_images,
        force=force,
        cache_size=cache_size,
        cache_workers=cache_workers,
    )
    return spec, options


def format_command(command: Callable[..., None]) -> Callable[..., None]:
    """`command(own options…, *, spec, options)` as a Typer command taking its own options and then `_shared`'s.

    The shared options are declared once (in `_shared`) instead of in every format command; Typer reads the
    combined signature and evaluated annotations set here.
    """
    own_hints = get_type_hints(command, include_extras=True)
    shared_hints = get_type_hints(_shared, include_extras=True)
    own = [
        p.replace(annotation=own_hints[p.name])
        for p in inspect.signature(command).parameters.values()
        if p.name not in ("spec", "options")
    ]
    shared = [p.replace(annotation=shared_hints[p.name]) for p in inspect.signature(_shared).parameters.values()]

    @functools.wraps(command)
    def wrapper(**values: Any) -> None:
        spec, options = _shared(**{p.name: values.pop(p.name) for p in shared})
        command(**values, spec=spec, options=options)

    wrapper.__signature__ = inspect.Signature([*own, *shared])  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in (*own, *shared)}
    return wrapper


@app.command("coco", cls=HelpCommand, epilog=examples(*EXAMPLES["coco"]))
@format_command
def coco(
    out: Out,
    root: Annotated[
        Path | None,
        typer.Option(
            help="COCO root: annotations/instances_trainYEAR.json (and _valYEAR), trainYEAR/ (and valYEAR/); "
            "YEAR is 2014 or 2017."
        ),
    ] = None,
    train_ann: Annotated[
        Path | None,
        typer.Option(help="Training instances file (default: instances_trainYEAR.json in ROOT/annotations)."),
    ] = None,
    test_ann: Annotated[
        Path | None,
        typer.Option(
            help="Test instances file (default: instances_valYEAR.json in ROOT/annotations if present, "
            "else no test split)."
        ),
    ] = None,
    train_images: Annotated[
        Path | None,
        typer.Option(
            help="Training image folder (default: named after the file, beside annotations/, e.g. ROOT/train2017)."
        ),
    ] = None,
    test_images: Annotated[Path | None, typer.Option(help="Test image folder (default e.g. ROOT/val2017).")] = None,
    *,
    spec: CorruptionSpec,
    options: WriteOptions,
) -> None:
    """MS-COCO instances files: train -> train + val, val -> test (crowd annotations are positives).

    --root finds COCO 2014 or 2017 files; without a val file (or --test-ann) there is no test split.
    """
    _prepare(
        lambda: _read_coco(root, train_ann, test_ann, train_images, test_images),
        out,
        spec,
        options,
        [root, train_ann, test_ann, train_images, test_images],
    )


def _read_coco(
    root: Path | None,
    train_ann: Path | None,
    test_ann: Path | None,
    train_images: Path | None,
    test_images: Path | None,
) -> LabelTable:
    """Resolve the COCO file and folder defaults from --root (2014 files, else 2017 ones), say which, then read."""
    from pumlc_cli.data.readers.coco import read_coco

    if root is None and train_ann is None:
        raise PumlcError("give --root (a COCO folder) or --train-ann (an instances file)")
    if root is not None and not root.is_dir():
        raise PumlcError(f"{root}: COCO root folder not found")
    if root is not None and train_ann is None:
        ann = root / "annotations"
        year = next((y for y in COCO_YEARS if (ann / f"instances_train{y}.json").is_file()), None)
        if year is None:
            raise PumlcError(
                f"{ann}: no instances_train2014.json or instances_train2017.json; "
                "name the files with --train-ann (and --test-ann)"
            )
        train_ann, train_images = ann / f"instances_train{year}.json", train_images or root / f"train{year}"
        if test_ann is None and (ann / f"instances_val{year}.json").is_file():
            test_ann, test_images = ann / f"instances_val{year}.json", test_images or root / f"val{year}"
        test = test_ann.name if test_ann else f"none (no instances_val{year}.json)"
        typer.echo(f"COCO {year} under {root}: train + val from {train_ann.name}, test from {test}")
    return read_coco(train_ann, test_ann, train_images, test_images)


@app.command("voc", cls=HelpCommand, epilog=examples(*EXAMPLES["voc"]))
@format_command
def voc(
    out: Out,
    root: Annotated[
        Path, typer.Option(help="VOC year folder, e.g. VOCdevkit/VOC2007 (Annotations/, ImageSets/Main/).")
    ],
    voc_difficult: Annotated[
        Literal["ignore", "negative", "positive"],
        typer.Option(
            help="Class present only as 'difficult' objects: ignore (unknown), negative (PU-MLC) or positive.",
            rich_help_panel=_S,
        ),
    ] = "ignore",
    *,
    spec: CorruptionSpec,
    options: WriteOptions,
) -> None:
    """PASCAL VOC devkit: trainval -> train + val, test -> test (test.txt optional)."""
    from pumlc_cli.data.readers.voc import read_voc

    _prepare(lambda: read_voc(root, difficult=voc_difficult), out, spec, options, [root])


@app.command("csv", cls=HelpCommand, epilog=examples(*EXAMPLES["csv"]))
@format_command
def csv_(
    out: Out,
    train: Annotated[
        Path, typer.Option(help="CSV with header 'image,labels', optionally ',negatives' (train -> train + val).")
    ],
    images: Annotated[Path, typer.Option(help="Folder the image paths in the CSV files are relative to.")],
    test: Annotated[Path | None, typer.Option(help="CSV of the test split (same format).")] = None,
    sep: Annotated[
        str, typer.Option(help="Separator between the class names of one image (default: whitespace).")
    ] = " ",
    classes: Annotated[
        str | None,
        typer.Option(help="Class list: a file with one name per line, or comma-separated names (default: inferred)."),
    ] = None,
    *,
    spec: CorruptionSpec,
    options: WriteOptions,
) -> None:
    """Your own labels: CSV files 'image,labels[,negatives]'.

    Without a 'negatives' column, classes not in 'labels' are negatives (--strip-negatives makes them unknown).

    With one, it lists the classes checked absent, and every class in neither column is unknown.
    """
    from pumlc_cli.data.readers.csv_reader import parse_class_list, read_csv_labels

    def read():
        class_list = parse_class_list(classes) if classes is not None else None
        return read_csv_labels(train, test, images, sep=sep, classes=class_list)

    class_file = classes if classes is not None and Path(classes).is_file() else None
    _prepare(read, out, spec, options, [train, test, images, class_file])


@app.command("openimages", cls=HelpCommand, epilog=examples(*EXAMPLES["openimages"]))
@format_command
def openimages(
    out: Out,
    root: Annotated[
        Path,
        typer.Option(
            help="Open Images folder: the V6 or V7 class descriptions, trainable list and "
            "*-annotations-human-imagelabels.csv files; images under train/, validation/, test/."
        ),
    ],
    classes: Annotated[
        str, typer.Option(help="Classes: trainable (the official list), all, or a file of MIDs (one per line).")
    ] = "trainable",
    machine_labels: Annotated[
        float | None,
        typer.Option(
            metavar="MIN_CONF",
            help="Also add the machine-generated labels with Confidence >= MIN_CONF as observed positives.",
        ),
    ] = None,
    images_optional: Annotated[
        bool,
        typer.Option(
            "--images-optional", help="Prepare the labels before the images are downloaded.", rich_help_panel=_S
        ),
    ] = False,
    *,
    spec: CorruptionSpec,
    options: WriteOptions,
) -> None:
    """Open Images V6/V7 image-level labels: verified labels known, every other class unknown.

    train -> train, validation -> val, test -> test; labels of classes outside --classes are dropped.
    """
    from pumlc_cli.data.readers.openimages import read_openimages

    _prepare(
        lambda: read_openimages(root, classes, machine_labels),
        out,
        spec,
        replace(options, images_optional=images_optional),
        [root, classes if Path(classes).is_file() else None],
    )
