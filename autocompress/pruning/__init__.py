"""Channel pruning: groups (what goes together), criteria (which channels), Pruner (how many), schedules."""

from autocompress.pruning.criteria import CRITERIA, get_importance
from autocompress.pruning.errors import PruneError
from autocompress.pruning.fingerprint import structure_hash
from autocompress.pruning.groups import PruneGroup
from autocompress.pruning.prune import Pruner, apply_schedule, kept_count
from autocompress.pruning.recalibrate import recalibrate_bn
from autocompress.pruning.schedule import GroupEntry, Schedule, ScheduleError

__all__ = [
    "CRITERIA",
    "GroupEntry",
    "PruneError",
    "PruneGroup",
    "Pruner",
    "Schedule",
    "ScheduleError",
    "apply_schedule",
    "get_importance",
    "kept_count",
    "recalibrate_bn",
    "structure_hash",
]
