"""The training loop: one process or one torchrun rank. Validation on the val split selects the best epoch.

Global batches are identical whatever the world size (rank r takes its slice of each global batch), and every
random draw is a function of (seed, epoch, step, index), so a run resumed mid-epoch or on another process count
follows the same trajectory.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from pumlc_cli.data.datasets import (
    STREAM_MIXUP,
    STREAM_PERMUTATION,
    STREAM_STEP,
    EntryTargets,
    KeySampler,
    LabelledImages,
    TrainTransform,
    sample_seed,
)
from pumlc_cli.errors import PumlcError, first_line
from pumlc_cli.evaluate.inference import (
    autocast_context,
    close_loader,
    eval_dataset,
    predict_entry_scores,
    predict_probs,
    shard_loader,
)
from pumlc_cli.evaluate.metrics import masked_average_precision, multilabel_metrics
from pumlc_cli.evaluate.thresholds import choose_entry_thresholds, choose_thresholds, write_thresholds_file
from pumlc_cli.runtime import dist
from pumlc_cli.runtime.checkpoint import check_classes, load_checkpoint, require_keys, save_checkpoint
from pumlc_cli.runtime.workers import init_worker
from pumlc_cli.train.config import TrainConfig
from pumlc_cli.train.ema import ModelEma
from pumlc_cli.train.tracking import StepLog, TensorBoard, log_interval, write_metrics

console = Console(stderr=True)
RESUME_KEYS = ("ema", "optimizer", "scheduler", "scaler", "epoch", "step_in_epoch", "global_step", "best", "history")
# In a distributed run ranks agree on a stop request every this many steps (one tiny all-reduce).
STOP_SYNC_EVERY = 5
# Without --save-every, last.pt is rewritten at an epoch's end once this long has passed since the last save.
SAVE_INTERVAL_S = 600.0


class Interrupted(Exception):
    """Raised after a signal was handled and the checkpoint saved; carries the conventional exit code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def resolve_amp(cfg: TrainConfig, device: torch.device) -> str:
    """`auto` = bf16 on a CUDA card that supports it, full precision on the CPU."""
    if cfg.amp != "auto":
        return cfg.amp
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "none"


def loss_options(cfg: TrainConfig) -> dict[str, Any]:
    """The loss's options; PU's α, γ come from the resolved config (the recipe's per-dataset values unless given)."""
    options: dict[str, Any] = dict(cfg.loss_options)
    if cfg.loss == "pu":
        for name in ("alpha", "gamma"):
            if getattr(cfg, name) is not None:
                options.setdefault(name, getattr(cfg, name))
    return options


def val_targets(observed: np.ndarray, policy: str) -> tuple[np.ndarray, str]:
    """Targets for model selection: observed val labels; unknowns are ignored unless the split has no negatives.

    With `--strip-negatives` and no clean val split, ignoring unknowns would leave only positives (AP = 1 for
    every class), so `auto` then scores unknowns as negatives, as the single-positive literature does.
    """
    if policy == "auto":
        policy = "ignore" if (observed == -1).any() else "negative"
    if policy not in {"ignore", "negative"}:
        raise PumlcError(f"--val-unknown must be auto, ignore or negative, not {policy!r}")
    targets = observed.copy()
    if policy == "negative":
        targets[targets == 0] = -1
    return targets, policy


def entry_val_targets(val: Any, policy: str, data: Any) -> tuple[np.ndarray, str]:
    """`val_targets` for a split kept as entries whose absent labels are unknown: the observed entries, unknowns
    ignored. Scoring unknowns as negatives would need every image x class score, so it is refused there."""
    if policy not in {"auto", "ignore", "negative"}:
        raise PumlcError(f"--val-unknown must be auto, ignore or negative, not {policy!r}")
    if policy == "negative" or (policy == "auto" and len(val.observed) and not (val.observed == -1).any()):
        raise PumlcError(
            f"{data}: the val split has no observed negatives and its unstated labels are unknown; "
            "re-prepare with --clean-val (val keeps the verified labels) or pass --val-unknown ignore"
        )
    return val.observed, "ignore"


def one_cycle_pct(pct_start: float, total_steps: int) -> float:
    """OneCycleLR divides by each phase's length: the warm-up ends at step pct·T − 1, the anneal runs from there
    to step T − 1. When either length is zero (e.g. 5 steps at 0.2, or pct 1.0) it divides by zero; the warm-up
    end then moves by half a step, the smallest change that keeps both phases."""
    end = pct_start * total_steps - 1
    if abs(end) < 1e-6:
        end = 0.5 if total_steps > 1.5 else -0.5
    if abs(total_steps - 1 - end) < 1e-6:
        end = total_steps - 1.5
    return (end + 1) / total_steps


def epoch_indices(n: int, global_batch: int, steps: int, seed: int, epoch: int, info: dist.DistInfo) -> list[int]:
    """This rank's slice of each global batch of the epoch's permutation (drop-last over global batches)."""
    gen = torch.Generator().manual_seed(sample_seed(seed, STREAM_PERMUTATION, epoch))
    perm = torch.randperm(n, generator=gen)[: steps * global_batch].view(steps, global_batch)
    per_rank = global_batch // info.world
    return perm[:, info.rank * per_rank : (info.rank + 1) * per_rank].reshape(-1).tolist()


class Trainer:
    """Builds everything from a TrainConfig and runs epochs; rank 0 writes the run folder."""

    def __init__(self, cfg: TrainConfig, info: dist.DistInfo) -> None:
        from pumlc_cli.data.prepared import load_prepared
        from pumlc_cli.losses import build_loss, needs_train_labels
        from pumlc_cli.models import build_model, label_cooccurrence, set_trainable

        self.cfg = cfg
        self.info = info
        self.run_dir = Path(cfg.out)
        self.prepared = load_prepared(cfg.data)
        self.classes = list(self.prepared.classes)
        self.amp = resolve_amp(cfg, info.device)
        if cfg.batch_size % info.world:
            raise PumlcError(f"--batch-size {cfg.batch_size} must be divisible by the {info.world} processes")
        train = self.prepared.split_entries("train")
        if len(train.images) < cfg.batch_size:
            raise PumlcError(f"{cfg.data}: {len(train.images)} training images < --batch-size {cfg.batch_size}")
        # Each batch's dense targets are scattered from the label entries (memory: the entries, not N x C).
        self.train_set = LabelledImages(
            self.prepared.image_root,
            train.images,
            EntryTargets.of(train, "observed"),
            TrainTransform(cfg.image_size, cfg.scale_size),
            seed=cfg.seed,
        )
        val = self.prepared.split_entries("val")
        # Absent labels unknown (Open Images): validation scores only the val entries, as eval does.
        self.val_entries = val if self.prepared.absent_truth == 0 else None
        if self.val_entries is not None:
            self.val_targets, self.val_policy = entry_val_targets(val, cfg.val_unknown, cfg.data)
        else:
            self.val_targets, self.val_policy = val_targets(self.prepared.split_data("val").observed, cfg.val_unknown)
        self._val_scope = "(known labels)" if self.val_policy == "ignore" else "(unknowns as negatives)"
        self.val_set = eval_dataset(self.prepared.image_root, val.images, None, cfg.image_size)
        self.steps_per_epoch = len(train.images) // cfg.batch_size
        workers, cuda = cfg.workers, info.device.type == "cuda"
        self.train_keys = KeySampler()
        self.train_loader = torch.utils.data.DataLoader(
            self.train_set,
            batch_size=cfg.batch_size // info.world,
            sampler=self.train_keys,
            num_workers=workers,
            pin_memory=cuda,
            worker_init_fn=init_worker,
            persistent_workers=workers > 0,
            collate_fn=self.train_set.collate,
        )
        self.val_loader = shard_loader(
            self.val_set, info, max(1, cfg.batch_size // info.world * 2), workers, persistent=True
        )
        # The one-cycle schedule spans `schedule_epochs`; the released recipe stops it after `epochs` (41 of 80).
        self.total_steps = self.steps_per_epoch * int(cfg.schedule_epochs)

        torch.manual_seed(cfg.seed)
        # The semantic head's graph is the co-occurrence of the labels the model may see: observed train labels.
        dense_train = self.prepared.split_data if cfg.head == "semantic" or needs_train_labels(cfg.loss) else None
        cooccurrence = label_cooccurrence(dense_train("train").observed) if cfg.head == "semantic" else None
        self.model = build_model(
            cfg.model,
            len(self.classes),
            local_global=cfg.local_global,
            # A resumed run's weights come from last.pt: no download, no weights file needed.
            pretrained=cfg.pretrained and not cfg.resume,
            pretrained_path=None if cfg.resume else cfg.pretrained_path,
            head=cfg.head,
            label_cooccurrence=cooccurrence,
            class_embeddings=cfg.class_embeddings,
        )
        if self.model.branches_skipped and info.is_main:
            console.print(
                f"note: {self.model.branches_skipped} grouped or depthwise 3x3 convs of {cfg.model} get no "
                f"local-global branch (the published branch is dense); {self.model.branches} added",
                soft_wrap=True,
            )
        # Frozen BatchNorm is the paper's fine-tuning setting; from random weights the statistics must learn.
        self.params = set_trainable(self.model, cfg.train_policy, freeze_bn=bool(cfg.freeze_bn))
        self.model.to(info.device)
        if cfg.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.ema = ModelEma(self.model, cfg.ema_decay, warmup=cfg.ema_warmup)
        kind = self.prepared.manifest.get("source", {}).get("reader", "coco")
        self.loss_fn = build_loss(
            cfg.loss,
            len(self.classes),
            dataset=kind,
            train_labels=dense_train("train").observed if needs_train_labels(cfg.loss) else None,
            **loss_options(cfg),
        ).to(info.device)
        fused = {"fused": True} if info.device.type == "cuda" else {}
        # adam: weight decay added to the gradient (L2), as the released train.py; adamw: decoupled decay.
        opt_cls = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam}[cfg.optimizer]
        groups = [{"params": self.params}, *self.loss_fn.param_groups(cfg.lr)]  # e.g. ROLE's label estimates
        self.optimizer = opt_cls(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, **fused)
        total = max(1, self.total_steps)
        self.scheduler = torch.optim.lr_scheduler.OneCycleLR(
            self.optimizer,
            max_lr=[group["lr"] for group in self.optimizer.param_groups],
            total_steps=total,
            pct_start=one_cycle_pct(cfg.pct_start, total),
        )
        self.scaler = torch.amp.GradScaler(info.device.type, enabled=self.amp == "fp16")
        self.use_mixup = cfg.loss == "pu" and cfg.mixup_weight > 0
        self.net: torch.nn.Module = self.model
        if info.distributed:
            device_ids = [info.local_rank] if info.device.type == "cuda" else None
            # Gradients live in DDP's buckets: defined before wrapping, they become bucket views, and backward
            # accumulates into them in place. DDP then never copies a gradient whose strides differ from its bucket's
            # (autograd may return a channels_last 1x1 kernel's gradient in either of two equivalent stride forms),
            # the cause of its "Grad strides do not match bucket view strides" warning; it also saves that copy.
            for param in self.model.parameters():
                if param.requires_grad:
                    param.grad = torch.zeros_like(param)
            self.net = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=device_ids, gradient_as_bucket_view=True
            )
        if cfg.compile:
            self.net = torch.compile(self.net)

        self.epoch = 0
        self.step_in_epoch = 0
        self.global_step = 0
        self.epoch_loss_sum: float | torch.Tensor = 0.0  # sum of the current epoch's step losses
        self.best: dict[str, Any] = {"mAP": -1.0, "epoch": -1, "weights": None}
        self.val_probs: dict[str, np.ndarray] = {}  # the last validation's scores, per weight set
        self.thresholds: dict[str, Any] | None = None  # chosen on val for the best weights (best.pt only)
        self.history: list[dict[str, Any]] = []
        self.stop_signal: int | None = None
        self.tensorboard: TensorBoard | None = None
        self.saved_at = time.monotonic()

    # ----------------------------------------------------------------- state
    def state(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "loss": self.loss_fn.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "epoch_loss_sum": float(self.epoch_loss_sum),
            "config": self.cfg.as_dict(),
            "classes": self.classes,
            "manifest_hash": self.prepared.manifest_hash,
            "best": self.best,
            "history": self.history,
            "torch_version": str(torch.__version__),
        }

    def best_state(self, state: dict[str, Any]) -> dict[str, Any]:
        """best.pt: what inference needs (the val-selected weight set, config, classes, data hash), no optimizer."""
        weights = self.best["weights"] or "ema"
        keep = ("epoch", "global_step", "config", "classes", "manifest_hash", "best", "torch_version")
        model = state["ema"]["module"] if weights == "ema" else state["model"]
        chosen = {"thresholds": self.thresholds} if self.thresholds is not None else {}
        return {**{k: state[k] for k in keep}, "weights": weights, "model": model, **chosen}

    def restore(self, path: Path) -> None:
        payload = load_checkpoint(path)
        require_keys(payload, RESUME_KEYS, path, "resumed")
        check_classes(payload, self.classes, path, Path(self.cfg.data))
        if payload.get("manifest_hash") != self.prepared.manifest_hash:
            raise PumlcError(
                f"{path}: was trained on a different prepared folder than {self.cfg.data} (manifest differs); "
                "resume needs the same data"
            )
        try:
            self.model.load_state_dict(payload["model"])
            self.loss_fn.load_state_dict(payload.get("loss", {}))
            self.ema.load_state_dict(payload["ema"])
            self.optimizer.load_state_dict(payload["optimizer"])
            self.scheduler.load_state_dict(payload["scheduler"])
            self.scaler.load_state_dict(payload["scaler"])
            self.epoch = int(payload["epoch"])
            self.step_in_epoch = int(payload["step_in_epoch"])
            self.global_step = int(payload["global_step"])
            self.epoch_loss_sum = float(payload.get("epoch_loss_sum", 0.0))
            self.best = dict(payload["best"])
            self.history = list(payload["history"])
        except (RuntimeError, KeyError, ValueError, TypeError) as err:
            raise PumlcError(f"{path}: damaged checkpoint, cannot be resumed ({first_line(str(err))})") from None

    # ------------------------------------------------------------------ loop
    def _loader(self) -> torch.utils.data.DataLoader:
        """The run's one training loader, pointed at this epoch's keys (minus the steps already done)."""
        indices = epoch_indices(
            len(self.train_set), self.cfg.batch_size, self.steps_per_epoch, self.cfg.seed, self.epoch, self.info
        )
        skip = self.step_in_epoch * (self.cfg.batch_size // self.info.world)
        self.train_keys.keys = [(self.epoch, i) for i in indices[skip:]]
        return self.train_loader

    def _step(self, images: torch.Tensor, observed: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """One optimiser step. PU's mixup images ride in the same forward pass as the batch (one pass, one
        DDP reduction); with frozen BatchNorm (the paper's policy) that equals the published second pass."""
        from pumlc_cli.losses import draw_mixup, mixup_penalty

        torch.manual_seed(sample_seed(self.cfg.seed, STREAM_STEP, self.global_step))
        images = images.to(self.info.device, non_blocking=True)
        if self.cfg.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        observed = observed.to(self.info.device, non_blocking=True)
        n = images.shape[0]
        with autocast_context(self.info.device, self.amp):
            if self.use_mixup:
                gen = torch.Generator().manual_seed(sample_seed(self.cfg.seed, STREAM_MIXUP, self.global_step))
                mixed, plan = draw_mixup(images, beta=self.cfg.mixup_beta, generator=gen)
                both = torch.cat([images, mixed])
                if self.cfg.channels_last:
                    both = both.contiguous(memory_format=torch.channels_last)
                out = self.net(both)
                logits = out[:n]
                loss = self.loss_fn(logits, observed, indices)
                loss = loss + self.cfg.mixup_weight * mixup_penalty(out[n:], logits, observed, plan)
            else:
                loss = self.loss_fn(self.net(images), observed, indices)
        self.optimizer.zero_grad(set_to_none=not self.info.distributed)  # DDP: keep the bucket views
        self.scaler.scale(loss).backward()
        if self.cfg.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.ema.update()
        return loss.detach()

    def _should_stop(self) -> bool:
        if self.cfg.max_steps and self.global_step >= self.cfg.max_steps:
            return True
        if not self.info.distributed:
            return self.stop_signal is not None
        if self.global_step % STOP_SYNC_EVERY:
            return False
        return dist.any_rank(self.stop_signal is not None, self.info)

    def validate(self) -> dict[str, Any]:
        """mAP over the val split's known labels, for the regular and the EMA weights."""
        if len(self.val_set) == 0:
            return {}
        out = {}
        val, c = self.val_entries, len(self.classes)
        for name, net in (("regular", self.model), ("ema", self.ema.module)):
            if val is not None:
                scores, _ = predict_entry_scores(
                    net, self.val_loader, self.info, self.amp, self.cfg.channels_last, val.indptr, val.classes
                )
                self.val_probs[name] = scores  # at the val entries only
                ap = masked_average_precision(val.classes, self.val_targets, scores, c)
                out[name] = float(100.0 * np.nanmean(ap)) if np.isfinite(ap).any() else float("nan")
                continue
            probs = predict_probs(net, self.val_loader, self.info, self.amp, self.cfg.channels_last, c)
            self.val_probs[name] = probs
            out[name] = float(multilabel_metrics(probs, self.val_targets)["mAP"])
        return out

    def run(self) -> None:
        cfg, info = self.cfg, self.info
        if info.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            console.print(
                f"[bold]pumlc train[/] {cfg.loss} on {len(self.train_set)} train / {len(self.val_set)} val images, "
                f"{len(self.classes)} classes, {info.world} process(es) on {info.device.type}, amp={self.amp}, "
                f"val unknowns: {self.val_policy}"
            )
        if cfg.tensorboard and info.is_main:
            self.tensorboard = TensorBoard(self.run_dir / "tensorboard", self.global_step)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            self._epochs()
            if info.is_main and self.epoch >= cfg.epochs:  # finished, not stopped by --max-steps
                self._report_files()
        finally:  # the caller (a shell, a test, a driver) gets its own handlers back
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if self.tensorboard is not None:
                self.tensorboard.close()

    def _epochs(self) -> None:
        cfg, info = self.cfg, self.info
        with Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}  lr {task.fields[lr]:.2e}  {task.fields[ips]:.0f} img/s"),
            TimeElapsedColumn(),
            console=console,
            disable=not info.is_main,
        ) as progress:
            every = log_interval(cfg.log_every, self.steps_per_epoch, console.is_terminal) if info.is_main else 0
            steps = StepLog(every, cfg.batch_size, lambda line: progress.console.print(line, soft_wrap=True))
            while self.epoch < cfg.epochs:
                self.loss_fn.set_epoch(self.epoch)  # e.g. LL-R's rejection rate grows with the epoch
                task = progress.add_task(
                    "train",
                    total=self.steps_per_epoch,
                    completed=self.step_in_epoch,
                    epoch=f"{self.epoch + 1}/{cfg.epochs}",
                    loss=0.0,
                    lr=self.scheduler.get_last_lr()[0],
                    ips=0.0,
                )
                # A resumed epoch carries the loss sum of its steps before the interruption, so train_loss
                # averages all of the epoch's steps.
                loss_sum = torch.full((), self.epoch_loss_sum, device=info.device)
                n_steps = 0
                t0 = time.perf_counter()
                steps.start(float(self.epoch_loss_sum))
                for images, observed, indices in self._loader():
                    loss_sum += self._step(images, observed, indices)
                    self.epoch_loss_sum = loss_sum
                    n_steps += 1
                    self.step_in_epoch += 1
                    self.global_step += 1
                    if steps.due(self.step_in_epoch):
                        where = f"epoch {self.epoch + 1}/{cfg.epochs} step {self.step_in_epoch}/{self.steps_per_epoch}"
                        steps.line(where, n_steps, float(loss_sum), self.scheduler.get_last_lr()[0])
                    if n_steps % 10 == 0 or self.step_in_epoch == self.steps_per_epoch:
                        elapsed = time.perf_counter() - t0
                        progress.update(
                            task,
                            completed=self.step_in_epoch,
                            loss=float(loss_sum) / self.step_in_epoch,
                            lr=self.scheduler.get_last_lr()[0],
                            ips=n_steps * cfg.batch_size / max(elapsed, 1e-9),
                        )
                    if self._should_stop():
                        return self._stop(progress)
                train_loss = float(loss_sum) / max(1, self.step_in_epoch)
                self.epoch_loss_sum = 0.0
                elapsed = time.perf_counter() - t0
                self.epoch += 1
                self.step_in_epoch = 0
                self._end_epoch(train_loss, n_steps * cfg.batch_size / max(elapsed, 1e-9), progress)
                progress.remove_task(task)

    def _end_epoch(self, train_loss: float, ips: float, progress: Progress) -> None:
        scores = self.validate()
        record = {
            "epoch": self.epoch,
            "step": self.global_step,
            "train_loss": train_loss,
            "lr": float(self.scheduler.get_last_lr()[0]),
            "images_per_s": ips,
            "val_mAP": scores.get("regular"),
            "val_mAP_ema": scores.get("ema"),
        }
        self.history.append(record)
        improved = False
        if scores:
            weights, value = max(scores.items(), key=lambda kv: kv[1])
            if value > self.best["mAP"]:
                self.best = {"mAP": value, "epoch": self.epoch, "weights": weights}
                improved = True
        if self.info.is_main:
            state = self.state()
            if self._save_due():
                save_checkpoint(self.run_dir / "last.pt", state)
                self.saved_at = time.monotonic()
            if improved:  # thresholds for the new best weights, on the labels val mAP scores
                self.thresholds = self._choose_thresholds(self.val_probs[self.best["weights"]])
            if improved or not scores:
                save_checkpoint(self.run_dir / "best.pt", self.best_state(state))
                if self.thresholds is not None:
                    write_thresholds_file(self.run_dir, self.thresholds)
            write_metrics(self.run_dir, self.history)
            if self.tensorboard is not None:
                self.tensorboard.epoch(record)
            val = (
                f"val mAP {self._val_scope} {scores['regular']:.2f} (EMA {scores['ema']:.2f})"
                if scores
                else "no val split"
            )
            progress.console.print(
                f"epoch {self.epoch}/{self.cfg.epochs}: loss {train_loss:.4f}, {val}, {ips:.0f} img/s"
                + (" [green]best[/]" if improved else ""),
                soft_wrap=True,  # one line in a log too, whatever its width
            )
        dist.barrier(self.info)

    def _choose_thresholds(self, scores: np.ndarray) -> dict[str, Any] | None:
        """Global and per-class F1-maximising thresholds on the val labels val mAP scores (unknowns ignored); on
        entry data (Open Images) from the scores at the val entries, never an images x classes matrix."""
        floor, val = self.cfg.threshold_min_positives, self.val_entries
        if val is None:
            return choose_thresholds(scores, self.val_targets, floor)
        return choose_entry_thresholds(val.classes, self.val_targets, scores, len(self.classes), len(val), floor)

    def _save_due(self) -> bool:
        """last.pt after the run's first epoch and its last, then every --save-every epochs (by default at the
        first epoch end SAVE_INTERVAL_S after the previous save); a signal or --max-steps saves it too (_stop),
        so a run loses at most the epochs since its last save only when killed outright."""
        if self.epoch >= self.cfg.epochs or not (self.run_dir / "last.pt").exists():
            return True
        if self.cfg.save_every:
            return self.epoch % self.cfg.save_every == 0
        return time.monotonic() - self.saved_at >= SAVE_INTERVAL_S

    def _report_files(self) -> None:
        """Sizes of the two checkpoints: last.pt resumes (optimizer included), best.pt is for eval and predict."""
        last, best = self.run_dir / "last.pt", self.run_dir / "best.pt"
        if not best.is_file():  # --max-steps stopped the run before its first epoch ended
            return
        console.print(
            f"saved {last} ({_megabytes(last)}, to resume) and {best} ({_megabytes(best)}, "
            f"{self.best['weights'] or 'ema'} weights of epoch {max(self.best['epoch'], 0) or self.epoch}, "
            "for eval and predict)"
        )

    def _stop(self, progress: Progress) -> None:
        if self.info.is_main:
            save_checkpoint(self.run_dir / "last.pt", self.state())
        dist.barrier(self.info)
        where = f"epoch {self.epoch + 1} step {self.step_in_epoch}/{self.steps_per_epoch}"
        if self.stop_signal is None and self.cfg.max_steps:
            if self.info.is_main:
                progress.console.print(f"stopped after --max-steps {self.cfg.max_steps} at {where}; saved last.pt")
            return
        sig = self.stop_signal or signal.SIGTERM
        raise Interrupted(
            128 + int(sig),
            f"interrupted ({signal.Signals(sig).name}) at {where}; saved {self.run_dir / 'last.pt'}; "
            f"continue with: pumlc train {self.cfg.data} --out {self.cfg.out} --resume",
        )

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self.stop_signal = signum


def _megabytes(path: Path) -> str:
    return f"{path.stat().st_size / 1e6:.1f} MB"


def run_training(cfg: TrainConfig) -> None:
    """Entry point of one process: join the group, train (or resume), leave the group."""
    info = dist.setup(cfg.resolved_device())
    try:
        _train(cfg, info)
    finally:
        dist.teardown(info)  # after _train returned: the DDP-wrapped model is gone before its group


def _train(cfg: TrainConfig, info: dist.DistInfo) -> None:
    trainer = Trainer(cfg, info)
    try:
        _resume_and_run(trainer, cfg, info)
    finally:  # an error (a damaged image in a worker) or a stop: the persistent workers go now
        close_loader(trainer.train_loader)
        close_loader(trainer.val_loader)


def _resume_and_run(trainer: Trainer, cfg: TrainConfig, info: dist.DistInfo) -> None:
    if cfg.resume:
        trainer.restore(Path(cfg.out) / "last.pt")
        if trainer.epoch >= cfg.epochs:
            if info.is_main:
                console.print(
                    f"{cfg.out}: all {trainer.epoch} epochs done; nothing to resume (more: --resume --epochs N)",
                    highlight=False,
                )
            return
    trainer.run()
