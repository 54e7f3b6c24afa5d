"""Channel selection with least-squares reconstruction of the next layer (He et al. 2017, as AMC uses it).

For a group whose only consumer is one ordinary conv (a block-internal group of a ResNet, a link of a
VGG chain: conv -> bn -> relu -> conv), removing input channels of the consumer changes its output. We
sample the consumer's input patches on calibration images once (from the unpruned model, as AMC does),
keep the input channels that contribute most to its output (||X_c W_c||), and refit the consumer's
weights on the kept channels by least squares so that its output matches the unpruned one.

Groups of other shapes (residual streams coupled by additions, depthwise groups, groups feeding a
Linear or several consumers) fall back to the configured criterion with no refit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch_pruning.pruner import function as tpf

from autocompress.config import PruneConfig
from autocompress.pruning.groups import GroupAnalysis

POSITIONS_PER_IMAGE = 10
"""Output positions sampled per calibration image (AMC samples 10)."""


@dataclass
class _Site:
    group: str
    consumer: str
    conv: nn.Conv2d
    root_to_in: np.ndarray
    """Consumer input channel of each root channel."""
    patches: torch.Tensor | None = None
    """(rows, in_channels, kh*kw) sampled input patches of the consumer."""


def _sites(model: nn.Module, analysis: GroupAnalysis) -> list[_Site]:
    """Groups with exactly one consumer, an ordinary (groups=1) Conv2d, and no residual coupling."""
    modules = dict(model.named_modules())
    internal = {g.name for g in analysis.groups if g.internal and g.kind == "conv"}
    sites = []
    for name, plan in analysis.plans.items():
        if name not in internal:
            continue
        consumers = [p for p in plan if p.fn in (tpf.prune_conv_in_channels, tpf.prune_linear_in_channels)]
        if len(consumers) != 1 or consumers[0].fn != tpf.prune_conv_in_channels:
            continue
        conv = modules[consumers[0].module]
        if not isinstance(conv, nn.Conv2d) or conv.groups != 1 or conv.padding_mode != "zeros":
            continue
        root_to_in = np.empty(len(consumers[0].idxs), dtype=np.int64)
        root_to_in[consumers[0].root_idxs] = consumers[0].idxs
        sites.append(_Site(name, consumers[0].module, conv, root_to_in))
    return sites


class Reconstructor:
    """Sampled consumer inputs of the unpruned model, and the selection + refit per pruning request."""

    def __init__(self, model: nn.Module, analysis: GroupAnalysis, images: torch.Tensor, cfg: PruneConfig) -> None:
        self._key = (images.data_ptr(), tuple(images.shape))
        self.sites = _sites(model, analysis)
        self._collect(model, images[: cfg.reconstruct_samples])
        self._memo: dict[tuple[str, int], tuple[np.ndarray, torch.Tensor]] = {}
        """(group, kept) -> (kept root channels, refit weight): the search revisits the same counts."""

    def matches(self, images: torch.Tensor) -> bool:
        return self._key == (images.data_ptr(), tuple(images.shape))

    @torch.no_grad()
    def _collect(self, model: nn.Module, images: torch.Tensor, batch_size: int = 100) -> None:
        gen = torch.Generator().manual_seed(0)
        chunks: dict[str, list[torch.Tensor]] = {s.group: [] for s in self.sites}

        def hook(site: _Site):
            def fn(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
                c = site.conv
                cols = F.unfold(inputs[0], c.kernel_size, c.dilation, c.padding, c.stride)  # (B, cin*kk, L)
                b, _, positions = cols.shape
                pick = torch.randint(positions, (b, POSITIONS_PER_IMAGE), generator=gen)
                rows = torch.gather(cols, 2, pick.unsqueeze(1).expand(-1, cols.shape[1], -1))  # (B, cin*kk, P)
                rows = rows.permute(0, 2, 1).reshape(-1, c.in_channels, c.kernel_size[0] * c.kernel_size[1])
                chunks[site.group].append(rows.float())

            return fn

        handles = [s.conv.register_forward_hook(hook(s)) for s in self.sites]
        was_training = model.training
        model.eval()
        try:
            for start in range(0, images.shape[0], batch_size):
                model(images[start : start + batch_size])
        finally:
            for h in handles:
                h.remove()
            model.train(was_training)
        for s in self.sites:
            s.patches = torch.cat(chunks[s.group]) if chunks[s.group] else None

    @torch.no_grad()
    def apply(
        self, kept: dict[str, int], removed: dict[str, np.ndarray]
    ) -> tuple[dict[str, np.ndarray], dict[str, torch.Tensor]]:
        """Override `removed` for reconstructible groups; full-size refit weights of their consumers.

        The refit weight keeps the consumer's full shape with the removed input channels zeroed, so it is
        written before physical pruning and sliced by it like any other weight.
        """
        removed = dict(removed)
        refits: dict[str, torch.Tensor] = {}
        for s in self.sites:
            n_keep = kept.get(s.group)
            if s.patches is None or n_keep is None or n_keep >= len(s.root_to_in):
                continue
            key = (s.group, int(n_keep))
            if key not in self._memo:
                self._memo[key] = self._select_and_refit(s, int(n_keep))
            roots_kept, weight = self._memo[key]
            removed[s.group] = np.setdiff1d(np.arange(len(s.root_to_in)), roots_kept)
            refits[s.consumer] = weight
        return removed, refits

    @staticmethod
    def _select_and_refit(s: _Site, n_keep: int) -> tuple[np.ndarray, torch.Tensor]:
        x = s.patches  # (n, cin, kk)
        w = s.conv.weight.detach().float()
        cout, cin = w.shape[:2]
        wf = w.reshape(cout, cin, -1)
        contrib = torch.stack([(x[:, c, :] @ wf[:, c, :].T).pow(2).sum() for c in range(cin)])
        in_to_root = np.empty(cin, dtype=np.int64)
        in_to_root[s.root_to_in] = np.arange(len(s.root_to_in))
        keep_in = torch.sort(torch.argsort(contrib, descending=True)[:n_keep]).values
        target = x.reshape(len(x), -1) @ wf.reshape(cout, -1).T  # unpruned output (bias excluded)
        design = x[:, keep_in, :].reshape(len(x), -1).double()
        solution = torch.linalg.lstsq(design, target.double()).solution  # (n_keep*kk, cout)
        new = torch.zeros_like(w)
        new[:, keep_in, :, :] = solution.T.reshape(cout, n_keep, *w.shape[2:]).float()
        return np.sort(in_to_root[keep_in.numpy()]), new.to(s.conv.weight.dtype)
