"""Before timm downloads pretrained weights: is the file cached, and if not, can its host be reached at all?

Why: without network, huggingface_hub retries its requests with back-off (about a minute of "Retrying" lines)
before timm gives up. A cache lookup and one short TCP connection answer the same question in well under a
second, so an offline start fails at once with a line that says what to do instead.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlsplit

from pumlc_cli.errors import PumlcError

PROBE_TIMEOUT_S = 3.0
# timm's weight files on the hub: the safetensors copy first, then the pickled one (timm/models/_hub.py).
_HUB_FILES = ("model.safetensors", "pytorch_model.bin")


def _source(name: str) -> tuple[str, str] | None:
    """Where timm would fetch `name`'s weights: ("hub", repo id) or ("url", address); None when timm has none."""
    from timm.models import get_pretrained_cfg

    try:
        cfg = get_pretrained_cfg(name)
    except RuntimeError:  # an unknown pretrained tag: timm's own error says so when the model is built
        return None
    if cfg is None:
        return None
    if cfg.hf_hub_id:
        return "hub", cfg.hf_hub_id
    if cfg.url:
        return "url", cfg.url
    return None


def _cached(kind: str, where: str) -> bool:
    if kind == "url":
        import torch.hub

        return (Path(torch.hub.get_dir()) / "checkpoints" / Path(urlsplit(where).path).name).is_file()
    from huggingface_hub import try_to_load_from_cache

    repo, _, revision = where.partition("@")
    return any(isinstance(try_to_load_from_cache(repo, f, revision=revision or None), str) for f in _HUB_FILES)


def _unreachable(url: str) -> str | None:
    """Why `url`'s host cannot be reached (one TCP connect), or None when it answers. Behind a proxy
    (HTTPS_PROXY and the like) a direct connect proves nothing, so the download itself decides."""
    from urllib.request import getproxies, proxy_bypass

    parts = urlsplit(url)
    if parts.scheme in getproxies() and not proxy_bypass(parts.hostname or ""):
        return None
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S):
            return None
    except OSError as err:
        return f"{host}:{port} unreachable: {err.strerror or type(err).__name__}"


def offline_reason(name: str) -> str | None:
    """Why `name`'s pretrained weights cannot be downloaded now, or None (cached, or the host answers)."""
    source = _source(name)
    if source is None or _cached(*source):
        return None
    kind, where = source
    if kind == "url":
        return _unreachable(where)
    from huggingface_hub import constants

    offline = constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}
    if offline:
        return "HF_HUB_OFFLINE is set and they are not in the cache"
    return _unreachable(constants.ENDPOINT)


def download_error(name: str, reason: str | None) -> PumlcError:
    """The one line for weights that cannot be had: what failed and the three ways on."""
    why = f" ({reason})" if reason else ""
    return PumlcError(
        f"cannot download {name} weights{why}: pass --pretrained-path FILE or --no-pretrained "
        "(HF_HUB_OFFLINE=1 uses weights already in the cache without network)"
    )
