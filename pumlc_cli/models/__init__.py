"""Backbones with PU-MLC's local-global branches, heads and the trainable-parameter policy."""

from pumlc_cli.models.build import (
    HEADS,
    TRAIN_POLICIES,
    LinearHead,
    MultiLabelNet,
    build_model,
    check_model_name,
    fetch_pretrained,
    freeze_batchnorm,
    set_trainable,
)
from pumlc_cli.models.local_global import (
    GlobalBranch,
    LocalGlobalConv,
    convert_local_global,
    published_branch_state,
    unmerge_for_tracing,
)
from pumlc_cli.models.semantic_head import SemanticHead, label_cooccurrence
from pumlc_cli.models.weights import load_backbone_file

__all__ = [
    "HEADS",
    "TRAIN_POLICIES",
    "GlobalBranch",
    "LinearHead",
    "LocalGlobalConv",
    "MultiLabelNet",
    "SemanticHead",
    "build_model",
    "check_model_name",
    "fetch_pretrained",
    "convert_local_global",
    "freeze_batchnorm",
    "label_cooccurrence",
    "load_backbone_file",
    "published_branch_state",
    "set_trainable",
    "unmerge_for_tracing",
]
