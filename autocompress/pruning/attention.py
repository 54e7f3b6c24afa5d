"""Attention layers: whole-head pruning, and the embedding width that stays fixed.

Head h of an nn.MultiheadAttention owns rows h*d .. (h+1)*d - 1 of each of the q, k and v blocks of
`in_proj_weight` / `in_proj_bias` and the same columns of `out_proj.weight` (d = head_dim). Removing heads keeps
the embedding width (the residual stream), so the layer then computes q/k/v narrower than `embed_dim`, which
torch's own forward refuses; the pruned layer becomes a `HeadPrunedMultiheadAttention` (same parameters, same
state_dict keys, a forward that runs any number of heads). Swin's window attention is pruned the same way
(`window_attention.py`, imported only once torchvision's Swin is loaded). A head group has one member, the
attention layer.

The embedding width itself is not pruned: Torch-Pruning's MultiheadAttention pruner cuts it inside the layer
only, and Swin's window attention applies its weights functionally, so the groups that reach into an attention
layer's embedding are left whole (`EMBED_FIXED_FNS`). Swin's attention is traced as one node (`tracing.py`):
its window partitioning otherwise sends Torch-Pruning's shape inference into a loop of minutes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import ModuleType

import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import nn
from torch_pruning.pruner import function as tpf

from autocompress.measure.flops import window_attention_types
from autocompress.pruning.errors import PruneError


class HeadPrunedMultiheadAttention(nn.MultiheadAttention):
    """nn.MultiheadAttention with `num_heads * head_dim` < `embed_dim` (some heads removed)."""

    def forward(  # nn.MultiheadAttention's signature
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = True,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batched = query.dim() == 3
        if not batched:
            query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
            key_padding_mask = None if key_padding_mask is None else key_padding_mask.unsqueeze(0)
        if not self.batch_first or not batched:
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        q, k, v = self._project(query, key, value)
        mask = _additive_mask(attn_mask, key_padding_mask, is_causal, q, k.shape[2])
        dropout = self.dropout if self.training else 0.0
        weights = None
        if need_weights:
            attn = torch.softmax(q @ k.transpose(-2, -1) * self.head_dim**-0.5 + (0 if mask is None else mask), -1)
            out = F.dropout(attn, dropout, self.training) @ v
            weights = attn.mean(1) if average_attn_weights else attn
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        out = out.transpose(1, 2).reshape(out.shape[0], out.shape[2], -1)
        out = F.linear(out, self.out_proj.weight, self.out_proj.bias)
        if not self.batch_first or not batched:
            out = out.transpose(0, 1)
        if not batched:
            out, weights = out.squeeze(1), None if weights is None else weights.squeeze(0)
        return out, weights

    def _project(self, *inputs: torch.Tensor) -> list[torch.Tensor]:
        """(batch, tokens, embed) inputs -> q, k, v as (batch, heads, tokens, head_dim)."""
        ws = self.in_proj_weight.chunk(3)
        bs = self.in_proj_bias.chunk(3) if self.in_proj_bias is not None else (None, None, None)
        return [F.linear(x, w, b).reshape(x.shape[0], -1, self.num_heads, self.head_dim).transpose(1, 2)
                for x, w, b in zip(inputs, ws, bs, strict=True)]  # reshape, not unflatten: ONNX keeps batch dynamic


def _additive_mask(attn_mask: torch.Tensor | None, key_padding_mask: torch.Tensor | None, is_causal: bool,
                   q: torch.Tensor, s: int) -> torch.Tensor | None:
    """nn.MultiheadAttention's masks (True = not attended, or additive floats) as one additive float mask."""
    n, h, t, _ = q.shape
    if attn_mask is None and is_causal:
        attn_mask = torch.ones(t, s, dtype=torch.bool, device=q.device).triu(1)
    mask = None
    if attn_mask is not None and attn_mask.dim() == 3 and attn_mask.shape[0] != n * h:
        raise PruneError(f"a per-head attn_mask of {attn_mask.shape[0]} rows does not fit {n} x {h} heads kept by "
                         "pruning; pass a 2-D mask, or one per kept head.")
    if attn_mask is not None:
        mask = _as_float(attn_mask if attn_mask.dim() == 2 else attn_mask.view(n, h, t, s), q.dtype)
    if key_padding_mask is not None:
        pad = _as_float(key_padding_mask, q.dtype).view(n, 1, 1, s)
        mask = pad if mask is None else mask + pad
    return mask


def _as_float(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(mask, float("-inf"))
    return mask.to(dtype)


def check_attention(name: str, m: nn.Module) -> None:
    """Raise a one-line PruneError naming `name` when the cost model cannot count this attention layer."""
    if not isinstance(m, nn.MultiheadAttention):
        return
    why = None
    if not m._qkv_same_embed_dim:
        why = "keys/values of another width (kdim/vdim) are not supported"
    elif m.bias_k is not None or m.add_zero_attn:
        why = "add_bias_kv / add_zero_attn are not supported"
    if why is not None:
        raise PruneError(f"layer {name!r} ({type(m).__name__}) is not supported: {why}.")


def _window_module() -> ModuleType | None:
    """`window_attention` (it imports torchvision) once torchvision's Swin is loaded, else None."""
    if not window_attention_types():
        return None
    from autocompress.pruning import window_attention

    return window_attention


def _is_window_v1(m: nn.Module) -> bool:
    """Swin's window attention whose heads can be removed (V1; V2's cosine attention keeps its heads)."""
    wa = _window_module()
    return wa is not None and type(m) in (window_attention_types()[0], wa.HeadPrunedWindowAttention)


def prunable_heads(m: nn.Module) -> bool:
    """Attention layers whose heads can be removed: nn.MultiheadAttention and Swin's window attention."""
    return (isinstance(m, nn.MultiheadAttention) or _is_window_v1(m)) and m.num_heads > 1


def head_pruner(m: nn.Module) -> Callable[[nn.Module, Sequence[int]], nn.Module]:
    """The function that removes heads from `m` (see `prunable_heads`)."""
    if isinstance(m, nn.MultiheadAttention):
        return prune_mha_heads
    return _window_module().prune_window_heads


def head_weights(layer: nn.Module) -> torch.Tensor:
    """(heads, -1): every weight each head owns (q, k, v rows of the input projection, output columns)."""
    if not isinstance(layer, nn.MultiheadAttention):
        return _window_module().window_head_weights(layer)
    h, d, e = layer.num_heads, layer.head_dim, layer.embed_dim
    w_in = layer.in_proj_weight.detach().reshape(3, h, d, e).transpose(0, 1).reshape(h, -1)
    w_out = layer.out_proj.weight.detach().reshape(e, h, d).transpose(0, 1).reshape(h, -1)
    return torch.cat([w_in, w_out], dim=1).float().cpu()


def embed_width(m: nn.Module) -> int:
    return int(m.embed_dim if isinstance(m, nn.MultiheadAttention) else m.qkv.in_features)


def _head_columns(m: nn.MultiheadAttention, heads: Sequence[int]) -> torch.Tensor:
    d = m.head_dim
    return torch.tensor([h * d + j for h in heads for j in range(d)], dtype=torch.long)


def prune_mha_heads(layer: nn.MultiheadAttention, idxs: Sequence[int]) -> nn.MultiheadAttention:
    """Remove heads `idxs`: their q/k/v rows of the input projection and their columns of out_proj."""
    h = layer.num_heads
    keep = sorted(set(range(h)) - {int(i) for i in idxs})
    if not keep:
        raise PruneError("cannot remove every head of an attention layer; keep at least one.")
    cols = _head_columns(layer, keep)
    inner = h * layer.head_dim
    rows = torch.cat([cols + block * inner for block in range(3)])  # the q, k and v blocks
    layer.in_proj_weight = nn.Parameter(layer.in_proj_weight.detach()[rows].clone())
    if layer.in_proj_bias is not None:
        layer.in_proj_bias = nn.Parameter(layer.in_proj_bias.detach()[rows].clone())
    out = layer.out_proj
    out.weight = nn.Parameter(out.weight.detach()[:, cols].clone())
    out.in_features = len(cols)
    layer.num_heads = len(keep)
    layer.__class__ = HeadPrunedMultiheadAttention
    return layer


class _FixedEmbedPruner(tpf.BasePruningFunc):
    """Torch-Pruning handler of Swin's window attention: a node of fixed embedding width (never applied)."""

    def prune_out_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        raise PruneError(f"the embedding width of {type(layer).__name__} cannot be pruned.")

    prune_in_channels = prune_out_channels

    def get_out_channels(self, layer: nn.Module) -> int:
        return int(layer.proj.out_features)

    def get_in_channels(self, layer: nn.Module) -> int:
        return int(layer.qkv.in_features)


_WINDOW_PRUNER = _FixedEmbedPruner()


def customized_pruners(model: nn.Module) -> dict[type, tpf.BasePruningFunc]:
    """For Torch-Pruning's DependencyGraph (which matches exact types): each window attention type in `model`
    (V1, V2, pruned) is one node of fixed embedding width."""
    types = window_attention_types()
    return {type(m): _WINDOW_PRUNER for m in model.modules() if types and isinstance(m, types)}


EMBED_FIXED_FNS = {
    tpf.prune_multihead_attention_out_channels,
    tpf.prune_multihead_attention_in_channels,
    _WINDOW_PRUNER.prune_out_channels,
    _WINDOW_PRUNER.prune_in_channels,
}
"""Handlers whose presence in a group means it reaches an attention layer's embedding width (left whole)."""


def is_embed_fixed(dep: tp.Dependency) -> bool:
    return dep.handler in EMBED_FIXED_FNS
