"""The paper's semantic head: class-embedding-guided attention + a gated graph over label co-occurrence.

For a feature map f (pooled 2x2 as in the published backbone) and class embeddings e_c:

    coef[c, p] = softmax_p( u . tanh(W_f f_p * W_e e_c) )        one attention map per class
    s_c        = sum_p coef[c, p] f_p                              class-specific feature
    h          = GGNN(s; A, A^T), 3 steps of gated updates         messages along label co-occurrence
    logit_c    = w_c . tanh(W_o [h_c; s_c] + b_o) + b_c            one classifier vector per class

A[i, j] = P(j observed positive | i observed positive) over the training set's *observed* labels.

The scorer stays the published two Linear layers (hidden -> hidden -> 1, with biases, nothing between): as a
function it is one linear functional, but Adam moves the two factors' entries separately, so one merged layer
would train differently. Rearrangements (exact): the per-class pooling is one bmm instead of a repeated feature
map multiplied and summed; the GGNN's six gate projections are three matmuls.

Precision: under fp16/bf16 autocast the released code's pooling sum and element-wise classifier run in float32
(a half-precision tensor times a float32 weight is promoted), so here they run with autocast off. Logits rounded
to bf16 would tie many test scores per class and lower the mAP.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def label_cooccurrence(observed: np.ndarray) -> np.ndarray:
    """A[i, j] = #(i and j observed positive) / #(i observed positive); 0 rows for never-positive i."""
    positive = (np.asarray(observed) == 1).astype(np.float64)
    counts = positive.T @ positive
    diag = np.diag(counts).copy()
    return np.divide(counts, diag[:, None], out=np.zeros_like(counts), where=diag[:, None] > 0)


class SemanticHead(nn.Module):
    """Feature map [B, D_in, H, W] -> logits [B, C] (see the module docstring)."""

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        *,
        cooccurrence: torch.Tensor | None = None,
        embeddings: torch.Tensor | None = None,
        embedding_dim: int = 300,
        feature_dim: int = 1024,
        hidden_dim: int = 512,
        output_dim: int = 1024,
        steps: int = 3,
    ) -> None:
        super().__init__()
        self.steps = steps
        self.project = (
            nn.Sequential(nn.Conv2d(in_features, feature_dim, 1, bias=False), nn.BatchNorm2d(feature_dim))
            if in_features != feature_dim
            else nn.Identity()
        )
        if cooccurrence is None:  # filled from a checkpoint's state dict
            cooccurrence = torch.zeros(num_classes, num_classes)
        self.register_buffer("adjacency", torch.as_tensor(cooccurrence, dtype=torch.float32))
        if embeddings is None:  # learnable class embeddings
            self.embeddings = nn.Parameter(torch.randn(num_classes, embedding_dim))
        else:  # fixed, as the paper's word vectors
            self.register_buffer("embeddings", torch.as_tensor(embeddings, dtype=torch.float32))
        embed_dim = self.embeddings.shape[1]
        self.feature_fc = nn.Linear(feature_dim, hidden_dim, bias=False)
        self.embedding_fc = nn.Linear(embed_dim, hidden_dim, bias=False)
        self.score_hidden = nn.Linear(hidden_dim, hidden_dim)
        self.score = nn.Linear(hidden_dim, 1)
        self.gate_in = nn.Linear(2 * feature_dim, 3 * feature_dim)  # z, r, candidate from messages
        self.gate_state = nn.Linear(feature_dim, 2 * feature_dim)  # z, r from the node state
        self.candidate_state = nn.Linear(feature_dim, feature_dim)  # candidate from the reset state
        self.output = nn.Linear(2 * feature_dim, output_dim)
        bound = output_dim**-0.5
        self.class_weight = nn.Parameter(torch.empty(num_classes, output_dim).uniform_(-bound, bound))
        self.class_bias = nn.Parameter(torch.empty(num_classes).uniform_(-bound, bound))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        f = self.project(F.avg_pool2d(features, 2, ceil_mode=True))
        tokens = f.flatten(2).transpose(1, 2)  # [B, HW, D]
        keys = self.feature_fc(tokens)  # [B, HW, K]
        queries = self.embedding_fc(self.embeddings)  # [C, K]
        joint = torch.tanh(keys[:, None] * queries[None, :, None])  # [B, C, HW, K]
        scores = self.score(self.score_hidden(joint)).squeeze(-1)  # [B, C, HW]
        wide = torch.promote_types(tokens.dtype, torch.float32)  # at least float32, as in the released code
        coef = torch.softmax(scores, dim=-1, dtype=wide)
        with torch.autocast(features.device.type, enabled=False):
            semantic = torch.bmm(coef, tokens.to(wide))  # [B, C, D]
        state = semantic
        adjacency = self.adjacency.to(state.dtype)
        for _ in range(self.steps):
            messages = torch.cat([adjacency @ state, adjacency.t() @ state], dim=-1)
            m_z, m_r, m_h = self.gate_in(messages).chunk(3, dim=-1)
            s_z, s_r = self.gate_state(state).chunk(2, dim=-1)
            update, reset = torch.sigmoid(m_z + s_z), torch.sigmoid(m_r + s_r)
            candidate = torch.tanh(m_h + self.candidate_state(reset * state))
            state = state + update * (candidate - state)  # promotes like the released (1-z)·h + z·ĥ
        out = torch.tanh(self.output(torch.cat([state, semantic], dim=-1)))  # [B, C, O]
        with torch.autocast(features.device.type, enabled=False):
            return torch.einsum("bco,co->bc", out.to(self.class_weight.dtype), self.class_weight) + self.class_bias
