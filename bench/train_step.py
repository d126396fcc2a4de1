"""CPU training-step cost of the local-global branches, and images/s of the PU recipe.

Times one step (forward, backward, AdamW step) of the same backbone and batch three ways: without
branches, with the optimised branches (pumlc_cli.models) and with the straightforward published-style
branches (bench/reference_local_global.py). The ratio "with / without" is taken under the `all` policy
(every conv trained in both runs), where it measures the branches' own cost; under the paper's `last`
policy the model without branches needs no backward through layer1-3 at all, so that ratio mostly shows
the design's price, not the implementation's. Then images/s for the `pu` loss with and without the mixup
regulariser, under the `last` policy as published.

    .venv/bin/python bench/train_step.py --model resnet50 --size 160 --batch 8
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reference_local_global import ReferenceGlobalBranch, convert_reference  # noqa: E402

from pumlc_cli.models import build_model, set_trainable  # noqa: E402


def make_model(name: str, classes: int, variant: str, policy: str, channels_last: bool) -> torch.nn.Module:
    """Same backbone weights for every variant (seeded), branches added per `variant`."""
    torch.manual_seed(0)
    if variant == "reference":
        model = build_model(name, classes, local_global=False)
        stem = (model.backbone.pretrained_cfg["first_conv"].split(".")[0],)
        model.branches = convert_reference(model.backbone, skip=stem)
    else:
        model = build_model(name, classes, local_global=variant == "optimised")
    set_trainable(model, policy)
    if variant == "reference":  # set_trainable knows only the package's branches
        for module in model.modules():
            if isinstance(module, ReferenceGlobalBranch):
                module.requires_grad_(True)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model.train()


def time_interleaved(steps: dict[Any, Callable[[], None]], warmup: int, reps: int) -> dict[Any, tuple[float, float]]:
    """Median (wall, process CPU) seconds per step of each entry, running them in turn each rep.

    Interleaving spreads load from other processes on a shared machine over all variants alike, and
    process CPU time (with one intra-op thread) does not count the time the process was preempted.
    """
    for _ in range(warmup):
        for step in steps.values():
            step()
    times: dict[Any, list[tuple[float, float]]] = {name: [] for name in steps}
    for _ in range(reps):
        for name, step in steps.items():
            wall, cpu = time.perf_counter(), time.process_time()
            step()
            times[name].append((time.perf_counter() - wall, time.process_time() - cpu))
    return {name: (statistics.median(w for w, _ in t), statistics.median(c for _, c in t)) for name, t in times.items()}


def bce_step(model: torch.nn.Module, images: torch.Tensor, targets: torch.Tensor) -> Callable[[], None]:
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.binary_cross_entropy_with_logits(model(images), targets).backward()
        opt.step()

    return step


def pu_step(model: torch.nn.Module, images: torch.Tensor, observed: torch.Tensor, mixup: bool) -> Callable[[], None]:
    from pumlc_cli.losses import build_loss, mixup_regulariser

    loss_fn = build_loss("pu", observed.shape[1])
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    generator = torch.Generator().manual_seed(0)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        logits = model(images)
        loss = loss_fn(logits, observed)
        if mixup:
            loss = loss + mixup_regulariser(model, images, logits, observed, generator=generator)
        loss.backward()
        opt.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--classes", type=int, default=80)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument(
        "--threads", type=int, default=1, help="intra-op threads (1: stable timings on a shared machine)"
    )
    parser.add_argument("--nchw", action="store_true", help="NCHW instead of channels_last")
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--skip-pu", action="store_true")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    channels_last = not args.nchw
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(args.batch, 3, args.size, args.size, generator=gen)
    if channels_last:
        images = images.to(memory_format=torch.channels_last)
    targets = (torch.rand(args.batch, args.classes, generator=gen) < 0.1).float()
    observed = torch.where(targets > 0, 1, -1).to(torch.int8)
    layout = "channels_last" if channels_last else "NCHW"
    print(
        f"{args.model} {args.size}x{args.size} batch {args.batch} {layout} fp32, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}; median of {args.reps}"
    )

    variants = ["plain", "optimised"] + ([] if args.skip_reference else ["reference"])
    for policy in ("all", "last"):
        models = {v: make_model(args.model, args.classes, v, policy, channels_last) for v in variants}
        times = time_interleaved({v: bce_step(m, images, targets) for v, m in models.items()}, args.warmup, args.reps)
        del models
        for i, kind in enumerate(("cpu", "wall")):
            line = ", ".join(f"{v} {t[i] * 1000:.0f} ms" for v, t in times.items())
            ratios = ", ".join(f"{v}/plain {times[v][i] / times['plain'][i]:.3f}" for v in variants[1:])
            print(f"policy {policy:4s} step ({kind:4s}): {line}; ratio {ratios}")

    if args.skip_pu:
        return
    try:
        from pumlc_cli.losses import build_loss, mixup_regulariser  # noqa: F401
    except ImportError as err:
        print(f"pu recipe: skipped, pumlc_cli.losses not available yet ({err})")
        return
    steps = {}
    for variant in ("plain", "optimised"):
        model = make_model(args.model, args.classes, variant, "last", channels_last)
        for mixup in (False, True):
            steps[(variant, mixup)] = pu_step(model, images, observed, mixup)
    times = time_interleaved(steps, args.warmup, args.reps)
    for (variant, mixup), (wall, cpu) in times.items():
        label = "pu+mixup" if mixup else "pu      "
        print(
            f"{label} policy last, {variant:9s}: {args.batch / cpu:6.1f} images/s "
            f"(CPU time; wall {args.batch / wall:.1f})"
        )


if __name__ == "__main__":
    main()
