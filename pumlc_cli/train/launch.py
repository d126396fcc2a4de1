"""Re-launch `pumlc train` under torchrun: several processes per node, several nodes."""

from __future__ import annotations

import sys
from pathlib import Path

from pumlc_cli.runtime.launch import free_port, run_torchrun
from pumlc_cli.train.config import TrainConfig


def torchrun_command(cfg: TrainConfig, config_path: Path) -> list[str]:
    """`python -m torch.distributed.run … -m pumlc_cli train DATA --out RUN --config RUN/config.json`.

    The children read every resolved option from config.json, so they run exactly what the parent resolved.
    """
    port = cfg.master_port or (free_port() if cfg.nnodes == 1 else 29500)
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={cfg.world_procs_per_node()}",
        f"--nnodes={cfg.nnodes}",
        f"--node_rank={cfg.node_rank}",
        f"--master_addr={cfg.master_addr}",
        f"--master_port={port}",
        "-m",
        "pumlc_cli",
        "train",
        cfg.data,
        "--out",
        cfg.out,
        "--config",
        str(config_path),
    ]


def relaunch(cfg: TrainConfig, config_path: Path) -> int:
    """Run torchrun in the foreground; its exit status becomes ours. A stop signal is passed on to the workers
    (which save a checkpoint and exit 0, so torchrun reports no failure) and gives 128 + the signal."""
    return run_torchrun(torchrun_command(cfg, config_path))
