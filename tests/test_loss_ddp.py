"""World-size invariance of the PU loss with two real gloo processes.

Two ranks hold unequal parts (6 and 10 images) of a 16-image batch and train one DDP-wrapped linear
layer. Each rank's loss must equal the single-process loss on the whole batch, and the DDP-averaged
weight gradient must equal the single-process gradient.
"""

from __future__ import annotations

import gc
import socket
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from pumlc_cli.losses import build_loss

N, D, C = 16, 5, 4
SPLIT = (6, 10)


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, D, generator=g)
    observed = torch.randint(-1, 2, (N, C), generator=g)
    observed[:, -1] = torch.where(torch.arange(N) == N - 1, 1, 0)  # one positive, on rank 1 only
    return x, observed


def _model() -> nn.Linear:
    torch.manual_seed(1)
    return nn.Linear(D, C)


def _step(model: nn.Module, x: torch.Tensor, observed: torch.Tensor) -> tuple[float, torch.Tensor]:
    loss = build_loss("pu", C, alpha=1.0, gamma=0.55)(model(x), observed)
    loss.backward()
    weight = model.module.weight if isinstance(model, nn.parallel.DistributedDataParallel) else model.weight
    return loss.item(), weight.grad.clone()


def _worker(rank: int, port: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        x, observed = _data()
        start = 0 if rank == 0 else SPLIT[0]
        part = slice(start, start + SPLIT[rank])
        model = nn.parallel.DistributedDataParallel(_model())
        loss, grad = _step(model, x[part], observed[part])
        torch.save({"loss": loss, "grad": grad}, Path(out) / f"rank{rank}.pt")
        del model  # a DDP module outliving its process group aborts the process at exit (see dist.teardown)
        gc.collect()
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_pu_loss_and_ddp_gradient_do_not_depend_on_world_size(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        x, observed = _data()
        loss, grad = _step(_model(), x, observed)
    finally:
        torch.set_num_threads(threads)
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        result = torch.load(tmp_path / f"rank{rank}.pt")
        assert abs(result["loss"] - loss) < 1e-5, (rank, result["loss"], loss)
        torch.testing.assert_close(result["grad"], grad, atol=1e-5, rtol=1e-5)
