"""The published-style local-global branch kept in bench/, loaded for tests (no CLI imports: the GPU box lacks
typer and pycocotools)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType


def load_reference() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "bench" / "reference_local_global.py"
    spec = importlib.util.spec_from_file_location("reference_local_global", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
