"""ESAA: efficient spatial-audio attention of per-Gaussian features over a few condition tokens."""

import torch
from torch import Tensor, nn


class SpatialAudioAttention(nn.Module):
    """Multi-head cross-attention from N spatial queries to K condition tokens; memory O(B*N*D)."""

    def __init__(self, dim: int, heads: int = 4) -> None:
        """Create projections for feature size `dim` split into `heads` heads."""
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, dim)
        self.to_k = nn.Linear(dim, dim)
        self.to_v = nn.Linear(dim, dim)
        self.to_out = nn.Linear(dim, dim)

    def forward(self, feat: Tensor, tokens: Tensor, bias: Tensor | None = None) -> Tensor:
        """Attend feat [N,D] (shared by the batch) to tokens [B,K,D], with `bias` [N,K] added to the
        attention logits of every head (None: no bias) -> feat + attention [B,N,D]."""
        batch, num_tokens, dim = tokens.shape
        head_dim = dim // self.heads
        q = self.to_q(self.norm_q(feat)).unflatten(-1, (self.heads, head_dim))  # [N,H,e]
        kv = self.norm_kv(tokens)
        k = self.to_k(kv).view(batch, num_tokens, self.heads, head_dim)
        v = self.to_v(kv).view(batch, num_tokens, self.heads, head_dim)
        logits = torch.einsum("nhe,bkhe->bnhk", q, k) * head_dim**-0.5
        if bias is not None:
            logits = logits + bias[:, None, :].to(logits.dtype)
        weights = logits.softmax(dim=-1)  # [B,N,H,K]
        # The output projection is linear, so apply it to the K values first: [B,H,K,D].
        out_values = torch.einsum("bkhe,dhe->bhkd", v, self.to_out.weight.view(dim, self.heads, head_dim))
        out = torch.einsum("bnhk,bhkd->bnd", weights.to(out_values.dtype), out_values)
        out = out + self.to_out.bias.to(out.dtype)
        return feat.to(out.dtype) + out
