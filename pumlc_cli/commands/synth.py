"""`pumlc synth OUT`: write the bundled synthetic dataset (a COCO root) that the demo and the tests use."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pumlc_cli.help import examples

EXAMPLES = examples("pumlc synth synth && pumlc prepare coco --root synth --out synth-prep --missing 0.5")


def synth(
    out: Annotated[Path, typer.Argument(help="Folder to create (a COCO root).")],
    images: Annotated[
        int, typer.Option(help="Number of images: 80% train2014 (train+val), 20% val2014 (test).")
    ] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the layout and the pixels.")] = 0,
    image_size: Annotated[int, typer.Option(help="Image side in pixels.")] = 64,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing folder.")] = False,
) -> None:
    """Coloured shapes, 10 classes, 1-4 objects per image: a COCO root for `pumlc prepare coco --root OUT`."""
    from rich.console import Console

    from pumlc_cli.data.synth import CLASSES, make_synth
    from pumlc_cli.errors import PumlcError

    if images < 2:
        raise PumlcError(f"--images must be at least 2, got {images}")
    n_test = max(1, images // 5)
    make_synth(out, images - n_test, n_test, seed, image_size, force=force)
    Console().print(
        f"wrote {out}: {images - n_test} train2014 + {n_test} val2014 images at {image_size}px, "
        f"{len(CLASSES)} classes\nnext: pumlc prepare coco --root {out} --out {out}-prepared --partial 0.5"
    )
