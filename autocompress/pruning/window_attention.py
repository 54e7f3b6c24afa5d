"""Whole-head pruning of Swin's window attention (torchvision's ShiftedWindowAttention).

Head h owns rows h*d .. (h+1)*d - 1 of each of the q, k and v blocks of `qkv`, the same columns of `proj`, and
column h of `relative_position_bias_table` (d = head width, unchanged by pruning). torchvision's
`shifted_window_attention` derives the head width from the input width, so a layer with fewer heads becomes a
`HeadPrunedWindowAttention`: the same parameters and state_dict keys, and the same computation (windows,
cyclic shift and its mask, relative position bias) with q/k/v as wide as the heads kept.
Swin V2's cosine attention (ShiftedWindowAttentionV2) keeps its heads.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.swin_transformer import ShiftedWindowAttention

from autocompress.pruning.errors import PruneError


def _shift_mask(x: torch.Tensor, pad_hw: tuple[int, int], window: Sequence[int], shift: Sequence[int]) -> torch.Tensor:
    """(windows, tokens, tokens) additive mask: -100 between tokens that the cyclic shift brought together."""
    ph, pw = pad_hw
    mask = x.new_zeros((ph, pw))
    count = 0
    for h in ((0, -window[0]), (-window[0], -shift[0]), (-shift[0], None)):
        for w in ((0, -window[1]), (-window[1], -shift[1]), (-shift[1], None)):
            mask[h[0]:h[1], w[0]:w[1]] = count
            count += 1
    mask = mask.view(ph // window[0], window[0], pw // window[1], window[1]).permute(0, 2, 1, 3)
    mask = mask.reshape(-1, window[0] * window[1])
    mask = mask.unsqueeze(1) - mask.unsqueeze(2)
    return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)


class HeadPrunedWindowAttention(ShiftedWindowAttention):
    """ShiftedWindowAttention with q/k/v narrower than the input (some heads removed)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, height, width, c = x.shape
        (wh, ww), heads = self.window_size, self.num_heads
        x = F.pad(x, (0, 0, 0, (ww - width % ww) % ww, 0, (wh - height % wh) % wh))
        _, ph, pw, _ = x.shape
        shift = [0 if wh >= ph else self.shift_size[0], 0 if ww >= pw else self.shift_size[1]]
        if sum(shift) > 0:
            x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))
        windows, tokens = (ph // wh) * (pw // ww), wh * ww
        x = x.view(b, ph // wh, wh, pw // ww, ww, c).permute(0, 1, 3, 2, 4, 5).reshape(b * windows, tokens, c)
        d = self.qkv.out_features // (3 * heads)
        q, k, v = F.linear(x, self.qkv.weight, self.qkv.bias).reshape(x.size(0), tokens, 3, heads, d).permute(
            2, 0, 3, 1, 4)
        attn = (q * d**-0.5).matmul(k.transpose(-2, -1)) + self.get_relative_position_bias()
        if sum(shift) > 0:
            mask = _shift_mask(x, (ph, pw), self.window_size, shift)
            attn = (attn.view(b, windows, heads, tokens, tokens) + mask.unsqueeze(1).unsqueeze(0)).view(
                -1, heads, tokens, tokens)
        attn = F.dropout(F.softmax(attn, dim=-1), p=self.attention_dropout, training=self.training)
        x = attn.matmul(v).transpose(1, 2).reshape(x.size(0), tokens, heads * d)
        x = F.dropout(F.linear(x, self.proj.weight, self.proj.bias), p=self.dropout, training=self.training)
        x = x.view(b, ph // wh, pw // ww, wh, ww, c).permute(0, 1, 3, 2, 4, 5).reshape(b, ph, pw, c)
        if sum(shift) > 0:
            x = torch.roll(x, shifts=(shift[0], shift[1]), dims=(1, 2))
        return x[:, :height, :width, :].contiguous()


def _columns(heads: Sequence[int], d: int) -> torch.Tensor:
    return torch.tensor([h * d + j for h in heads for j in range(d)], dtype=torch.long)


def _sliced(p: torch.Tensor, idx: torch.Tensor, dim: int) -> nn.Parameter:
    return nn.Parameter(p.detach().index_select(dim, idx).clone())


def prune_window_heads(layer: ShiftedWindowAttention, idxs: Sequence[int]) -> ShiftedWindowAttention:
    """Remove heads `idxs`: their q/k/v rows of qkv, columns of proj and relative position bias columns."""
    h = layer.num_heads
    keep = sorted(set(range(h)) - {int(i) for i in idxs})
    if not keep:
        raise PruneError("cannot remove every head of an attention layer; keep at least one.")
    inner = layer.qkv.out_features // 3
    cols = _columns(keep, inner // h)
    rows = torch.cat([cols + block * inner for block in range(3)])
    layer.qkv.weight = _sliced(layer.qkv.weight, rows, 0)
    if layer.qkv.bias is not None:
        layer.qkv.bias = _sliced(layer.qkv.bias, rows, 0)
    layer.qkv.out_features = len(rows)
    layer.proj.weight = _sliced(layer.proj.weight, cols, 1)
    layer.proj.in_features = len(cols)
    table = layer.relative_position_bias_table
    layer.relative_position_bias_table = _sliced(table, torch.tensor(keep, dtype=torch.long), 1)
    layer.num_heads = len(keep)
    layer.__class__ = HeadPrunedWindowAttention
    return layer


def window_head_weights(layer: ShiftedWindowAttention) -> torch.Tensor:
    """(heads, -1): each head's q, k, v rows of qkv, its columns of proj and its relative position biases."""
    h, c = layer.num_heads, layer.qkv.in_features
    d = layer.qkv.out_features // (3 * h)
    w_in = layer.qkv.weight.detach().reshape(3, h, d, c).transpose(0, 1).reshape(h, -1)
    w_out = layer.proj.weight.detach().reshape(-1, h, d).transpose(0, 1).reshape(h, -1)
    bias = layer.relative_position_bias_table.detach().t()
    return torch.cat([w_in, w_out, bias], dim=1).float().cpu()
