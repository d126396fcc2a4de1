"""`pumlc export`: a run's val-selected weights as an ONNX model or a TorchScript archive, scores out, checked.

The exported graph takes the normalised batch `pumlc predict` feeds its network ([N, 3, S, S] float32, any N) and
returns sigmoid scores [N, C]; how to get from an image file to that batch (size, mean, std) and what the columns
are (class names, the val thresholds when the checkpoint has them) travel in the file's metadata under "pumlc".
Before the file is renamed into place it is loaded back by the runtime that will serve it (onnxruntime, or
torch.jit) and must reproduce `pumlc predict`'s scores on sample images at two batch sizes.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import warnings
import zipfile
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pumlc_cli.errors import PumlcError, first_line

if TYPE_CHECKING:
    import numpy as np
    import torch

    from pumlc_cli.evaluate.model import Model

FORMAT = "pumlc-export-v1"
META_KEY = "pumlc"  # ONNX metadata_props key; TorchScript extra file `pumlc.json`
TOLERANCE = 1e-4
SAMPLES = 4
ONNX_MODULES = ("onnx", "onnxscript", "onnxruntime")


class ExportFormat(str, Enum):
    onnx = "onnx"
    torchscript = "torchscript"


@dataclass(frozen=True)
class ExportOptions:
    """Everything `pumlc export` was given."""

    run: Path
    format: ExportFormat
    out: Path
    force: bool


@dataclass(frozen=True)
class Exported:
    path: Path
    metadata: dict[str, Any]
    max_diff: float
    samples: str
    batch: int


def run_export(opts: ExportOptions) -> Exported:
    """Check everything a user can get wrong, export on the CPU, verify the file, rename it into place."""
    from pumlc_cli.atomic import atomic_path
    from pumlc_cli.evaluate.model import load_model
    from pumlc_cli.outputs import check_model_file

    fmt = ExportFormat(opts.format)
    ckpt = _checkpoint(opts.run)
    if fmt is ExportFormat.onnx:
        _require_onnx()
    kind = "an ONNX model pumlc exported" if fmt is ExportFormat.onnx else "a TorchScript archive pumlc exported"
    out = check_model_file(
        opts.out, "--out", inputs=[ckpt], force=opts.force, kind=kind, replaceable=lambda p: is_export(p, fmt)
    )
    model = load_model(ckpt, device="cpu")
    batch, samples = _sample_batch(model)
    expected = model.score_tensor(batch)  # `pumlc predict`'s scores, before the network is touched for tracing
    metadata = export_metadata(model)
    with atomic_path(out) as tmp:
        try:
            _write(model, batch, fmt, tmp, metadata)
        except PumlcError:
            raise
        except Exception as err:  # an operator or head the exporter cannot express; the cause in one line
            raise PumlcError(
                f"cannot export {model.config['model']} ({model.config['head']} head) as {fmt.value}: "
                f"{type(err).__name__}: {first_line(str(err)) or 'no message'}"
            ) from None
        diff = max(abs(_run_exported(tmp, fmt, part) - expected[rows]).max() for rows, part in _batches(batch))
        if not diff <= TOLERANCE:
            raise PumlcError(
                f"the exported {fmt.value} model's scores differ from pumlc predict's by {diff:.2g} "
                f"(more than {TOLERANCE:g}) on {samples}; nothing written"
            )
    return Exported(out, metadata, float(diff), samples, len(batch))


def _checkpoint(run: Path) -> Path:
    """A run folder stands for its best.pt only: an export is of the weights selected on val."""
    run = Path(run)
    if run.is_dir():
        if not (run / "best.pt").is_file():
            what = "its last.pt holds unselected weights" if (run / "last.pt").is_file() else "not a run folder"
            raise PumlcError(
                f"{run}: no best.pt (the weights selected on val; {what}); "
                "export a run that validated an epoch, or pass a checkpoint file"
            )
        return run / "best.pt"
    return run


def _require_onnx() -> None:
    missing = [name for name in ONNX_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        raise PumlcError(
            f"ONNX export needs {', '.join(missing)} (not installed): pip install 'pumlc[export]', "
            "or use --format torchscript"
        )


def export_metadata(model: Model) -> dict[str, Any]:
    """What a consumer needs besides the graph: the preprocessing, the columns, where the weights came from."""
    from pumlc_cli.data.prepared import toolkit_version

    size = model.image_size
    return {
        "format": FORMAT,
        "pumlc_version": toolkit_version(),
        "input": {
            "name": "images",
            "shape": ["batch", 3, size, size],
            "dtype": "float32",
            "preprocess": f"RGB, bicubic resize to {size}x{size} (aspect not kept), /255, minus mean, over std",
            "image_size": size,
            "mean": list(model.mean),
            "std": list(model.std),
        },
        "output": {"name": "scores", "shape": ["batch", len(model.classes)], "activation": "sigmoid"},
        "classes": model.classes,
        "thresholds": model.thresholds,
        "source": {
            "checkpoint": str(model.checkpoint),
            "weights": model.weights,
            "epoch": model.epoch,
            "model": model.config["model"],
            "head": model.config["head"],
        },
    }


def read_metadata(path: Path, fmt: ExportFormat) -> dict[str, Any]:
    """The "pumlc" metadata of an exported file."""
    if fmt is ExportFormat.onnx:
        import onnx

        props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        return json.loads(props[META_KEY])
    with zipfile.ZipFile(path) as zf:
        name = next(n for n in zf.namelist() if n.endswith(f"/extra/{META_KEY}.json"))
        return json.loads(zf.read(name))


def is_export(path: Path, fmt: ExportFormat) -> bool:
    """Whether `path` is a file `pumlc export --format fmt` wrote (what --force may replace)."""
    try:
        return read_metadata(path, fmt).get("format") == FORMAT
    except Exception:  # not a zip, not an ONNX protobuf, no or damaged metadata: all mean "not ours"
        return False


def _scores_net(network: torch.nn.Module) -> torch.nn.Module:
    """The network followed by the sigmoid, as `Model.score_tensor` computes it."""
    import torch

    class ScoresNet(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.network = network

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(self.network(images).float())

    return ScoresNet().eval()


def _write(model: Model, batch: torch.Tensor, fmt: ExportFormat, path: Path, metadata: dict[str, Any]) -> None:
    import torch

    from pumlc_cli.models import unmerge_for_tracing

    network = model.network.to(memory_format=torch.contiguous_format)
    unmerge_for_tracing(network)
    net = _scores_net(network)
    text = json.dumps(metadata)
    with torch.no_grad(), warnings.catch_warnings():
        # torch marks TorchScript deprecated (FutureWarning) and the tracer warns about Python values it
        # freezes; the check at two batch sizes below is what tells whether the graph generalises
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        if fmt is ExportFormat.torchscript:
            traced = torch.jit.trace(net, batch, _store_inputs=False)
            torch.jit.save(traced, str(path), _extra_files={f"{META_KEY}.json": text})
            return
        program = torch.onnx.export(
            net,
            (batch,),
            dynamo=True,
            input_names=["images"],
            output_names=["scores"],
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            verbose=False,
        )
        program.model.metadata_props[META_KEY] = text
        program.save(str(path), external_data=False)


def _batches(batch: torch.Tensor) -> list[tuple[slice, torch.Tensor]]:
    """The whole sample batch, then its first image alone: a graph frozen to one batch size fails one of them."""
    return [(slice(None), batch), (slice(0, 1), batch[:1])]


def _run_exported(path: Path, fmt: ExportFormat, batch: torch.Tensor) -> np.ndarray:
    """Scores of the written file, run by the runtime that will serve it."""
    import numpy as np

    if fmt is ExportFormat.onnx:
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return np.asarray(session.run(["scores"], {"images": batch.numpy()})[0])
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        loaded = torch.jit.load(str(path), map_location="cpu")
        with torch.no_grad():
            return loaded(batch).numpy()


def _sample_batch(model: Model) -> tuple[torch.Tensor, str]:
    """Up to SAMPLES val images of the run's prepared folder when it is still there, else seeded noise images."""
    import numpy as np
    import torch

    paths: list[Path] = []
    try:
        from pumlc_cli.data.prepared import load_prepared

        prepared = load_prepared(Path(model.config["data"]))
        for split in ("val", "test", "train"):
            paths = [prepared.image_path(p) for p in prepared.split_data(split).images[:SAMPLES]]
            if len(paths) >= 2:
                break
        tensors = [model.preprocess(p) for p in paths]
        if len(tensors) >= 2:
            return torch.stack(tensors), f"{len(tensors)} {split} images of {prepared.path}"
    except (PumlcError, KeyError, TypeError, OSError):
        pass  # the prepared folder moved or was deleted: the numbers can still be checked on noise
    rng = np.random.default_rng(0)
    noise = [rng.integers(0, 256, (model.image_size, model.image_size, 3), dtype=np.uint8) for _ in range(SAMPLES)]
    return torch.stack([model.preprocess(a) for a in noise]), f"{SAMPLES} noise images (the run's data is gone)"


def report(done: Exported, fmt: ExportFormat) -> None:
    """One line on stderr: what was written and how closely it matches `pumlc predict`."""
    meta, size = done.metadata, done.path.stat().st_size / 1e6
    print(
        f"exported {done.path} ({fmt.value}, {size:.1f} MB): {len(meta['classes'])} classes, "
        f"{meta['input']['image_size']} px, {meta['source']['weights']} weights of epoch {meta['source']['epoch']}; "
        f"matches pumlc predict within {done.max_diff:.1e} on {done.samples} (batches of {done.batch} and 1)",
        file=sys.stderr,
    )
