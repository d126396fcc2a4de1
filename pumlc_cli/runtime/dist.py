"""Process-group set-up and the collectives the trainer and evaluator need. Nothing here runs at import."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from pumlc_cli.errors import PumlcError


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def setup(device_kind: str) -> DistInfo:
    """Join the process group torchrun described in the environment, or run alone."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device_kind == "cuda":
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_kind == "cuda" else "gloo")
    return DistInfo(rank=rank, world=world, local_rank=local_rank, device=device)


def device_kind(device: str) -> str:
    """`--device auto|cuda|cpu` as the device to use: auto is CUDA when present; cuda without one is one line."""
    cuda = torch.cuda.is_available()
    if device == "cuda" and not cuda:
        raise PumlcError("--device cuda: no CUDA device is visible")
    return device if device != "auto" else ("cuda" if cuda else "cpu")


def check_gpus(gpus: int, device_kind: str) -> None:
    """More than one GPU must exist: asking for several and silently training on one CPU process is refused."""
    if gpus <= 1:
        return
    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if device_kind != "cuda" or visible < gpus:
        what = f"{visible} CUDA device(s) visible" if visible else f"no CUDA device, {os.cpu_count() or 1} CPU cores"
        hint = "; for several CPU processes use --nproc" if not visible else ""
        raise PumlcError(f"--gpus {gpus}: this machine has {what}{hint}")


def teardown(info: DistInfo) -> None:
    """Leave the group once nothing uses it: a DistributedDataParallel module (its reducer) still alive when the
    group is destroyed aborts the process at exit (SIGABRT, "terminate called without an active exception")."""
    if info.distributed and dist.is_initialized():
        import gc

        gc.collect()  # a model kept only by reference cycles goes now, not after the group
        dist.destroy_process_group()


def any_rank(flag: bool, info: DistInfo) -> bool:
    """True on every rank when any rank says so (used to stop together on a signal)."""
    if not info.distributed:
        return flag
    t = torch.tensor([int(flag)], device=info.device if info.device.type == "cuda" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def gather_rows(indices: torch.Tensor, rows: torch.Tensor, info: DistInfo) -> tuple[torch.Tensor, torch.Tensor]:
    """Collect (index, row) shards from all ranks and order them by index; shards may differ in length."""
    if not info.distributed:
        order = torch.argsort(indices)
        return indices[order], rows[order]
    shards: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * info.world
    dist.all_gather_object(shards, (indices.cpu(), rows.cpu()))
    all_idx = torch.cat([s[0] for s in shards if s is not None])
    all_rows = torch.cat([s[1] for s in shards if s is not None])
    order = torch.argsort(all_idx)
    return all_idx[order], all_rows[order]
