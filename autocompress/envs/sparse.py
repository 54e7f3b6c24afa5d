"""The Evaluator's part for env.sparsity unstructured: zero weights, price a policy, measure the real bytes.

A policy is group -> sparsity (share of the weights zeroed in the conv / linear layers the group owns,
`autocompress.pruning.sparsity`). The budget wall prices it analytically: nonzero parameters exactly, compressed
bytes by the size table (each sparsified layer's weight deflated once per grid level, `SizeTable`). Every
evaluated network is also measured by writing and deflating its state dict, and both figures are reported.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping
from typing import Any

from torch import nn

from autocompress.measure.size import SizeTable, compressed_bytes
from autocompress.pruning import Pruner
from autocompress.pruning.sparsity import WeightSparsity, freeze_zeros, nonzero_params, sparsify

SIZE_MARGIN = 0.002
"""Share of a size budget the wall holds in reserve. The table interpolates linearly between grid levels, and the
measured archive came out up to 0.07% above its prediction (ResNet-20, random per-group sparsity), so a wall at
the full budget would let measured bytes overshoot it by that much."""


class SparseCompressor:
    """Unstructured magnitude sparsity of one network, per searched group, with its size accounting."""

    def __init__(self, model: nn.Module, pruner: Pruner, size_table: bool) -> None:
        self.weights = WeightSparsity(model, pruner.layer_specs, pruner.group_names)
        self.base_bytes = compressed_bytes(model)
        """The unpruned network's measured export (the denominator of every size ratio)."""
        self.table = (SizeTable.build(self.base_bytes, list(self.weights.layers), self.weights.sparse_weight)
                      if size_table else None)
        """Predicted bytes for the budget wall (a size budget only: it takes seconds to build)."""

    @property
    def layers(self) -> list[str]:
        """The sparsified layers, in network order."""
        return list(self.weights.layers)

    def apply(self, model: nn.Module, group_sparsity: Mapping[str, float], keep_masks: bool = False) -> nn.Module:
        """A copy of `model` with each group's layers sparsified; `keep_masks` holds the zeros through a
        later fine-tune (prune masks; `autocompress.pruning.sparsity.remove_masks` makes them permanent)."""
        out = sparsify(copy.deepcopy(model), self.weights.layer_sparsity(group_sparsity))
        return freeze_zeros(out, self.layers) if keep_masks else out

    def key(self, group_sparsity: Mapping[str, float]) -> tuple[Any, ...]:
        """Evaluation-cache part: nonzero weights per layer (equal counts, equal networks: the order is fixed)."""
        return ("nonzero", *self.weights.kept_weights(group_sparsity).values())

    def cost(self, group_sparsity: Mapping[str, float], kind: str) -> float:
        """The budgeted resource: predicted compressed bytes (size) or nonzero parameters (params)."""
        if kind == "size":
            assert self.table is not None, "the size table is built for size budgets"
            return self.table.predict(self.weights.layer_sparsity(group_sparsity))
        return float(self.weights.nonzero_params(group_sparsity))

    def measure(self, model: nn.Module, group_sparsity: Mapping[str, float]) -> dict[str, Any]:
        """The sparsified `model`'s real figures: compressed bytes (written and deflated), nonzero parameters."""
        start = time.perf_counter()
        size = compressed_bytes(model)
        nonzero = nonzero_params(model)
        info: dict[str, Any] = {
            "layer_sparsity": self.weights.layer_sparsity(group_sparsity),
            "compressed_bytes": size,
            "baseline_compressed_bytes": self.base_bytes,
            "size_ratio": size / self.base_bytes,
            "nonzero_params": nonzero,
            "baseline_nonzero_params": self.weights.base_nonzero,
            "nonzero_ratio": nonzero / self.weights.base_nonzero,
        }
        if self.table is not None:
            info["predicted_bytes"] = self.table.predict(info["layer_sparsity"])
        info["size_s"] = time.perf_counter() - start
        return info
