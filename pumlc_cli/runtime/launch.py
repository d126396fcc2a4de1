"""Re-run a `pumlc` command as torchrun processes on this node (sharded eval and audit), repeating its own
command line; `pumlc train`'s multi-node launch builds on `free_port` (pumlc_cli.train.launch)."""

from __future__ import annotations

import contextlib
import enum
import functools
import os
import socket
import subprocess
import sys
from typing import Any


def free_port() -> int:
    """An unused loopback port for a single-node rendezvous."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_torchrun(cmd: list[str]) -> int:
    """Run a torchrun command in the foreground; its exit status is ours.

    torchrun runs in its own session, so a Ctrl-C or a SIGTERM to our process group reaches only us (torchrun's
    agent would answer it with a traceback); we pass the signal to the worker processes themselves, wait for them
    (a training run saves a checkpoint) and exit 128 + the signal. torchrun dies with us even on SIGKILL.
    """
    from pumlc_cli.runtime.interrupt import Stopped, stop_on_signals
    from pumlc_cli.runtime.workers import child_pids, die_with_parent

    proc = subprocess.Popen(cmd, start_new_session=True, preexec_fn=functools.partial(die_with_parent, os.getpid()))
    try:
        with stop_on_signals():
            return proc.wait()
    except Stopped as stop:
        for pid in child_pids(proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, stop.signum)
        proc.wait()
        return stop.code


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
    return run_torchrun(cmd)


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
