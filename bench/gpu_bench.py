"""Training and evaluation images/s of the PU-MLC recipes on one GPU (run by bench/gpu_check.sh).

Configurations, all on the same backbone, input size and batch:
- plain: fine-tuning without branches, bf16 autocast, channels_last, fused AdamW, BCE, every weight trained;
- published: the straightforward recipe as the paper's code runs it: reference branches beside every 3x3
  conv, fp16 autocast + GradScaler, NCHW, Adam, `last` policy, PU loss, per-tensor EMA, and the mixup
  regulariser as a second forward pass outside autocast (fp32), where the published code calls it;
- optimised: pumlc's branches, bf16 (no scaler), channels_last, fused AdamW, `last` policy, PU loss,
  foreach EMA, optional torch.compile, and mixup images run in the same forward pass as the batch (the
  BatchNorms are frozen, so a joint pass gives each image the same output as two passes would);
- eval: bf16 inference of the optimised model, alone and after GPU JPEG decode + resize of synthetic
  JPEGs (decode alone is reported too).

Imports nothing that needs pycocotools. CPU smoke test:
    .venv/bin/python bench/gpu_bench.py --device cpu --model test_resnet --size 64 --batch 4 --steps 2
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from train_step import make_model  # noqa: E402

from pumlc_cli.losses import build_loss, draw_mixup, mixup_penalty, mixup_regulariser  # noqa: E402

EMA_DECAY = 0.9997


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def images_per_second(step: Callable[[], None], n_images: int, steps: int, warmup: int, device) -> float:
    for _ in range(warmup):
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return n_images * steps / (time.perf_counter() - start)


def plain_step(model, images, targets, device) -> Callable[[], None]:
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, fused=device.type == "cuda")

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            logits = model(images)
        F.binary_cross_entropy_with_logits(logits.float(), targets).backward()
        opt.step()

    return step


def published_step(model, images, observed, mixup: bool, device) -> Callable[[], None]:
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-4, weight_decay=1e-4)
    scaler = torch.amp.GradScaler(device.type)
    loss_fn = build_loss("pu", observed.shape[1])
    ema = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.float16):
            logits = model(images)
        loss = loss_fn(logits, observed)
        if mixup:
            loss = loss + mixup_regulariser(model, images, logits, observed)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        with torch.no_grad():
            for key, value in model.state_dict().items():
                if value.dtype.is_floating_point:
                    ema[key].copy_(ema[key] * EMA_DECAY + (1.0 - EMA_DECAY) * value)

    return step


def optimised_step(model, forward, images, observed, mixup: bool, device) -> Callable[[], None]:
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=1e-4, fused=device.type == "cuda")
    loss_fn = build_loss("pu", observed.shape[1])
    live = [t for t in model.state_dict().values() if t.dtype.is_floating_point]
    ema = [t.detach().clone() for t in live]
    n = images.shape[0]

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            if mixup:
                mixed, plan = draw_mixup(images, beta=0.3)
                batch = torch.cat([images, mixed]).contiguous(memory_format=torch.channels_last)
                both = forward(batch)
                logits, mixed_logits = both[:n], both[n:]
            else:
                logits = forward(images)
            loss = loss_fn(logits, observed)
            if mixup:
                loss = loss + mixup_penalty(mixed_logits, logits, observed, plan)
        loss.backward()
        opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(ema, live, 1.0 - EMA_DECAY)

    return step


def synthetic_jpegs(count: int, width: int = 640, height: int = 480) -> list[torch.Tensor]:
    """Smooth random images with mild noise, JPEG-encoded in memory (compress like photos, not like noise)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    out = []
    for _ in range(count):
        coarse = rng.integers(0, 256, (height // 32, width // 32, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((width, height), Image.BICUBIC)
        pixels = np.asarray(image, dtype=np.int16) + rng.integers(-8, 9, (height, width, 3))
        buffer = io.BytesIO()
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(buffer, format="JPEG", quality=90)
        out.append(torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8))
    return out


def eval_figures(model, args, device) -> None:
    from torchvision.io import decode_jpeg

    model.eval()
    batch = args.eval_batch
    images = torch.randn(batch, 3, args.size, args.size, device=device).contiguous(memory_format=torch.channels_last)
    mean = torch.tensor([0.485, 0.456, 0.406], device=device).view(1, 3, 1, 1) * 255
    std = torch.tensor([0.229, 0.224, 0.225], device=device).view(1, 3, 1, 1) * 255
    jpegs = synthetic_jpegs(batch)

    @torch.inference_mode()
    def infer(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            return torch.sigmoid(model(x))

    def decode() -> torch.Tensor:
        decoded = decode_jpeg(jpegs, device=device)
        return torch.stack(decoded) if isinstance(decoded, list) else decoded

    def decode_and_infer() -> None:
        pixels = decode().float()
        pixels = F.interpolate(pixels, size=(args.size, args.size), mode="bilinear", antialias=False)
        infer(((pixels - mean) / std).contiguous(memory_format=torch.channels_last))

    for label, fn in (
        ("bf16 inference only", lambda: infer(images)),
        ("JPEG decode only (640x480)", decode),
        ("decode + resize + inference", decode_and_infer),
    ):
        speed = images_per_second(fn, batch, args.steps, args.warmup, device)
        print(f"eval  {label:34s}: {speed:8.1f} images/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--model", default="resnet101")
    parser.add_argument("--size", type=int, default=448)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--eval-batch", type=int, default=128)
    parser.add_argument("--classes", type=int, default=80)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--compile", action="store_true", help="torch.compile the optimised model")
    parser.add_argument(
        "--only",
        default="plain,published,published-nomix,optimised,optimised-nomix,eval",
        help="comma-separated subset to run",
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True
    only = set(args.only.split(","))

    gen = torch.Generator().manual_seed(0)
    images = torch.randn(args.batch, 3, args.size, args.size, generator=gen)
    targets = (torch.rand(args.batch, args.classes, generator=gen) < 0.05).float()
    observed = torch.where(targets > 0, 1, -1).to(torch.int8).to(device)
    targets = targets.to(device)
    nchw = images.to(device)
    nhwc = nchw.contiguous(memory_format=torch.channels_last)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"{name}, torch {torch.__version__}: {args.model} {args.size}x{args.size}, batch {args.batch}, "
        f"{args.steps} timed steps after {args.warmup}"
    )

    def run(label: str, build: Callable[[], Callable[[], None]]) -> None:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        step = build()
        speed = images_per_second(step, args.batch, args.steps, args.warmup, device)
        memory = f", peak {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB" if device.type == "cuda" else ""
        print(f"train {label:34s}: {speed:8.1f} images/s{memory}")

    def model(variant: str, policy: str, channels_last: bool) -> torch.nn.Module:
        return make_model(args.model, args.classes, variant, policy, channels_last).to(device)

    if "plain" in only:
        run(
            "plain fine-tune bf16 (all)",
            lambda: plain_step(model("plain", "all", True), nhwc, targets, device),
        )
    for mixup in (True, False):
        if ("published" if mixup else "published-nomix") in only:
            label = f"published recipe{' + mixup' if mixup else ''}"
            run(
                label,
                lambda m=mixup: published_step(model("reference", "last", False), nchw, observed, m, device),
            )
    for mixup in (True, False):
        if ("optimised" if mixup else "optimised-nomix") in only:
            net = model("optimised", "last", True)
            forward = torch.compile(net) if args.compile else net
            label = f"optimised recipe{' + mixup' if mixup else ''}{' (compiled)' if args.compile else ''}"
            run(label, lambda n=net, f=forward, m=mixup: optimised_step(n, f, nhwc, observed, m, device))
    if "eval" in only:
        eval_figures(model("optimised", "last", True), args, device)


if __name__ == "__main__":
    main()
