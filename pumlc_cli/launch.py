"""Re-launch `pumlc train` under torchrun (several processes per node, several nodes) and `eval`/`audit` (one node)."""

from __future__ import annotations

import enum
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from pumlc_cli.config import TrainConfig


def free_port() -> int:
    """An unused loopback port for a single-node rendezvous."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
    """Run torchrun in the foreground; its exit status becomes ours. A stop signal is passed on to it (and so to
    the workers, which save a checkpoint) and waited for, so no process outlives us."""
    from pumlc_cli.interrupt import Stopped, stop_on_signals

    proc = subprocess.Popen(torchrun_command(cfg, config_path))
    try:
        with stop_on_signals():
            return proc.wait()
    except Stopped as stop:
        proc.send_signal(stop.signum)
        return proc.wait()


def run_local(procs: int, pumlc_args: list[str]) -> int:
    """`pumlc ARGS` as `procs` torchrun processes on this node (sharded eval and audit); its exit status is ours."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={procs}",
        "--nnodes=1",
        "--master_addr=127.0.0.1",
        f"--master_port={free_port()}",
        "-m",
        "pumlc_cli",
        *pumlc_args,
    ]
    return subprocess.call(cmd)


def repeat_argv(ctx: Any, **values: object) -> list[str]:
    """The command line that repeats this command's invocation (a click/Typer context), `values` replacing some
    parameters' values: every argument in order, every option in its first spelling, unset options left out."""
    args: list[str] = []
    for param in ctx.command.params:
        if not param.expose_value:
            continue
        value = values.get(param.name, ctx.params.get(param.name))
        value = value.value if isinstance(value, enum.Enum) else value
        if param.param_type_name == "argument":
            args.append(str(value))
        elif getattr(param, "is_flag", False) and not getattr(param, "is_bool_flag", True):
            raise ValueError(f"{param.name}: only on/off flags can be repeated")
        elif getattr(param, "is_flag", False):
            spelling = param.opts[0] if value else (param.secondary_opts or [None])[0]
            args += [spelling] if spelling else []
        elif value is not None:
            args += [param.opts[0], str(value)]
    return args
