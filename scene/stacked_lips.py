"""The lip predictors of a deformation network run as one: the weights of its P audio encoders and lip heads
stacked, so that each layer of all P runs as one kernel. At batch 1 a GPU pays for each kernel launch, and two
predictors run one after the other cost 13 % of the frame rate (bench.render_speed on an H200, 80k Gaussians);
stacked, both take 37 operations a call, fewer than one predictor's 43. Inference only: the weights are copied
when it is built."""

from __future__ import annotations

from itertools import groupby

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scene.audio_encoder import AudioEncoder, LinearAudioEncoder, check_window
from scene.deformation import DeformationNetwork


def _stack(tensors: list[Tensor]) -> Tensor:
    """Detached copy of equal-shaped tensors stacked on a new first axis [P,...]."""
    return torch.stack([t.detach() for t in tensors])


def _affine(weights: list[Tensor], biases: list[Tensor]) -> tuple[nn.Parameter, nn.Parameter]:
    """P linear maps (weight [O,I], bias [O]) as operands of one baddbmm: weights [P,I,O], biases [P,1,O]."""
    w = _stack(weights).transpose(1, 2).contiguous()
    return nn.Parameter(w), nn.Parameter(_stack(biases)[:, None])


def _layer_norm(norms: list[nn.LayerNorm]) -> tuple[nn.Parameter, nn.Parameter]:
    """P LayerNorms' weights and biases, each [P,1,D]."""
    w, b = _stack([n.weight for n in norms]), _stack([n.bias for n in norms])
    return nn.Parameter(w[:, None]), nn.Parameter(b[:, None])


def _predictors(deform: DeformationNetwork) -> tuple[list[nn.Module], list[nn.Linear]]:
    """The audio encoders and lip heads of `deform`'s lip predictors (ValueError for audio_code 'free')."""
    if deform.cfg.audio_code != "lips":
        raise ValueError("only audio_code 'lips' networks have lip predictors")
    encoders, heads = [deform.audio_encoder], [deform.lip_head]
    if deform.cfg.lip_predictors == 2:
        encoders.append(deform.corpus_audio_encoder)
        heads.append(deform.corpus_lip_head)
    return encoders, heads


def stacked_lip_predictors(deform: DeformationNetwork) -> nn.Module:
    """`deform`'s lip predictors run as one, for inference (ValueError for audio_code 'free'): audio [B,C,W]
    -> [P,B,3]. Each run of predictors with one kind of encoder shares a stack (StackedLipPredictors for
    attention, StackedLinearLipPredictors for linear): with both kinds (lip_encoder 'linear_corpus'), one of
    each, in the predictors' order."""
    encoders, heads = _predictors(deform)
    stacks = []
    for linear, run in groupby(
        zip(encoders, heads, strict=True), lambda p: isinstance(p[0], LinearAudioEncoder)
    ):
        group_encoders, group_heads = zip(*run, strict=True)
        kind = StackedLinearLipPredictors if linear else StackedLipPredictors
        stacks.append(kind(list(group_encoders), list(group_heads)))
    return stacks[0] if len(stacks) == 1 else _Concatenated(stacks)


class _Concatenated(nn.Module):
    """Stacks of lip predictors run one after the other, their [P_k,B,3] outputs concatenated -> [P,B,3]."""

    def __init__(self, stacks: list[nn.Module]) -> None:
        """Hold `stacks`, in the order of the predictors they run."""
        super().__init__()
        self.stacks = nn.ModuleList(stacks)

    def forward(self, audio: Tensor) -> Tensor:
        """Lip measures of every predictor from audio features [B,C,W] -> [P,B,3]."""
        return torch.cat([stack(audio) for stack in self.stacks])


class StackedLinearLipPredictors(nn.Module):
    """The P linear lip predictors (lip_encoder 'linear') of a DeformationNetwork as one matrix product: each
    encoder's map and lip head folded into one map of the flattened window, the P maps side by side."""

    def __init__(self, encoders: list[nn.Module], heads: list[nn.Linear]) -> None:
        """Copy the weights of P linear encoders and their lip heads (ValueError for another encoder)."""
        super().__init__()
        if not all(isinstance(e, LinearAudioEncoder) for e in encoders):
            raise ValueError("StackedLinearLipPredictors needs linear lip encoders")
        self.count, self.in_channels, self.window = len(encoders), encoders[0].in_channels, encoders[0].window
        with torch.no_grad():
            weight = [h.weight @ e.linear.weight for h, e in zip(heads, encoders, strict=True)]  # [3,C*W]
            bias = [h.weight @ e.linear.bias + h.bias for h, e in zip(heads, encoders, strict=True)]
            self.weight = nn.Parameter(torch.cat(weight).T.contiguous())  # [C*W,P*3]
            self.bias = nn.Parameter(torch.cat(bias))  # [P*3]
        self.requires_grad_(False)

    def forward(self, audio: Tensor) -> Tensor:
        """Lip measures of every predictor from audio features [B,C,W] -> [P,B,3]."""
        check_window(audio, self.in_channels, self.window)
        out = torch.addmm(self.bias, audio.flatten(1), self.weight)  # [B,P*3]
        return out.reshape(len(audio), self.count, -1).transpose(0, 1)


class StackedLipPredictors(nn.Module):
    """The P lip predictors of a DeformationNetwork (audio_code 'lips') as one module: audio features [B,C,W]
    -> each predictor's standardised lip measures [P,B,3], as DeformationNetwork.lip_predictions gives them.
    Besides stacking, what is constant at inference is folded: the pooling query's projection, and the pooling
    attention's output projection, the encoder's output layer and the lip head (three linear maps in a row)
    as one."""

    def __init__(self, encoders: list[nn.Module], heads: list[nn.Linear]) -> None:
        """Copy the weights of P attention encoders (AudioEncoder) and their lip heads (ValueError for
        another encoder)."""
        super().__init__()
        if not all(isinstance(e, AudioEncoder) for e in encoders):
            raise ValueError("StackedLipPredictors needs attention lip encoders")
        first = encoders[0]
        self.count, self.heads = len(encoders), first.self_attn.num_heads
        self.in_channels, self.window = first.in_channels, first.window
        self.dim = d = first.out.in_features
        self.slope, self.eps = first.conv[1].negative_slope, first.norm_self.eps
        with torch.no_grad():
            # the first convolution of every predictor reads the same audio: one convolution of P*D outputs;
            # the second reads its own predictor's features: a convolution of P groups
            for i, name in ((0, "conv1"), (2, "conv2")):
                weight = torch.cat([e.conv[i].weight.detach() for e in encoders])
                bias = torch.cat([e.conv[i].bias.detach() for e in encoders])
                setattr(self, f"{name}_w", nn.Parameter(weight))
                setattr(self, f"{name}_b", nn.Parameter(bias))
            self.pos = nn.Parameter(_stack([e.pos for e in encoders])[:, None])  # [P,1,W,D]
            self.norm_self_w, self.norm_self_b = _layer_norm([e.norm_self for e in encoders])
            self.norm_pool_w, self.norm_pool_b = _layer_norm([e.norm_pool for e in encoders])
            attn = [e.self_attn for e in encoders]
            self.qkv_w, self.qkv_b = _affine([a.in_proj_weight for a in attn], [a.in_proj_bias for a in attn])
            self.self_out_w, self.self_out_b = _affine(
                [a.out_proj.weight for a in attn], [a.out_proj.bias for a in attn]
            )
            pool = [e.pool_attn for e in encoders]
            self.kv_w, self.kv_b = _affine(
                [a.in_proj_weight[d:] for a in pool], [a.in_proj_bias[d:] for a in pool]
            )
            query = [
                e.query[0, 0] @ a.in_proj_weight[:d].T + a.in_proj_bias[:d]
                for e, a in zip(encoders, pool, strict=True)
            ]
            self.pool_q = nn.Parameter(_stack(query)[:, None])  # [P,1,D]
            # pooling output projection, encoder output layer, lip head: x -> head(out(proj(x)))
            last_w = [
                h.weight @ e.out.weight @ a.out_proj.weight
                for h, e, a in zip(heads, encoders, pool, strict=True)
            ]
            last_b = [
                h.weight @ (e.out.weight @ a.out_proj.bias + e.out.bias) + h.bias
                for h, e, a in zip(heads, encoders, pool, strict=True)
            ]
            self.last_w, self.last_b = _affine(last_w, last_b)
        self.requires_grad_(False)

    def _norm(self, x: Tensor, name: str) -> Tensor:
        """Each predictor's LayerNorm `name` of x [P,L,D]."""
        normed = F.layer_norm(x, (self.dim,), eps=self.eps)
        return torch.addcmul(getattr(self, f"{name}_b"), normed, getattr(self, f"{name}_w"))

    def _heads(self, t: Tensor, batch: int) -> Tensor:
        """[P,B*L,D] -> [P*B,H,L,D/H] for scaled_dot_product_attention."""
        p, d = self.count, self.dim
        return t.reshape(p * batch, -1, self.heads, d // self.heads).transpose(1, 2)

    def forward(self, audio: Tensor) -> Tensor:
        """Lip measures of every predictor from audio features [B,C,W] -> [P,B,3]."""
        check_window(audio, self.in_channels, self.window)
        b, p, d, w = audio.shape[0], self.count, self.dim, self.window
        x = F.leaky_relu(F.conv1d(audio, self.conv1_w, self.conv1_b, padding=1), self.slope)
        x = F.leaky_relu(F.conv1d(x, self.conv2_w, self.conv2_b, padding=1, groups=p), self.slope)
        x = (x.reshape(b, p, d, w).permute(1, 0, 3, 2) + self.pos).reshape(p, b * w, d)  # [P,B*W,D]
        q, k, v = torch.baddbmm(self.qkv_b, self._norm(x, "norm_self"), self.qkv_w).chunk(3, dim=-1)
        att = F.scaled_dot_product_attention(self._heads(q, b), self._heads(k, b), self._heads(v, b))
        x = x + torch.baddbmm(self.self_out_b, att.transpose(1, 2).reshape(p, b * w, d), self.self_out_w)
        k, v = torch.baddbmm(self.kv_b, self._norm(x, "norm_pool"), self.kv_w).chunk(2, dim=-1)
        q = self.pool_q.expand(p, b, d)
        pooled = F.scaled_dot_product_attention(self._heads(q, b), self._heads(k, b), self._heads(v, b))
        return torch.baddbmm(self.last_b, pooled.reshape(p, b, d), self.last_w)  # [P,B,3]
