"""pumlc: multi-label classification from positive labels only (PU-MLC).

`pumlc_cli.load_prepared(path)` (a prepared folder) and `pumlc_cli.load_model(run)` (a trained run that scores
images) are resolved lazily so that importing the package stays cheap (no torch).
"""

from __future__ import annotations

_LAZY = {
    "load_prepared": "pumlc_cli.data.prepared",
    "Prepared": "pumlc_cli.data.prepared",
    "SplitData": "pumlc_cli.data.prepared",
    "load_model": "pumlc_cli.evaluate.model",
    "Model": "pumlc_cli.evaluate.model",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pumlc_cli' has no attribute {name!r}")
