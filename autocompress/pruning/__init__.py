"""Channel pruning: groups (what goes together), criteria (which channels), Pruner (how many), schedules."""

from autocompress.pruning.criteria import CRITERIA, get_importance
from autocompress.pruning.errors import PruneError
from autocompress.pruning.groups import PruneGroup
from autocompress.pruning.prune import Pruner, kept_count
from autocompress.pruning.recalibrate import recalibrate_bn

__all__ = ["CRITERIA", "PruneError", "PruneGroup", "Pruner", "get_importance", "kept_count", "recalibrate_bn"]
