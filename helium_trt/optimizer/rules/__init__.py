"""The optimizer's rules, one per module, and the order the driver applies them in."""

from helium_trt.optimizer.rules.eliminate_dead_ops import EliminateDeadOps
from helium_trt.optimizer.rules.fetch_cached_results import FetchCachedResults
from helium_trt.optimizer.rules.fold_constants import FoldConstants
from helium_trt.optimizer.rules.merge_identical_ops import MergeIdenticalOps
from helium_trt.optimizer.rules.prune_switches import PruneSwitches
from helium_trt.optimizer.rules.unroll_loops import UnrollLoops

RULES = (
    # First: every later rule reasons about a loop-free DAG, and unrolled bodies expose their
    # templates to folding and their copies to merging.
    UnrollLoops(),
    # Before pruning: a switch on a constant-built format is decidable only once folded; before
    # merging: templates that differ only in how a constant is referenced become identical.
    FoldConstants(),
    # Before merging and dead-op elimination: the untaken branches it leaves are dropped, not
    # merged or looked up.
    PruneSwitches(),
    # After folding and pruning (more ops look identical), before the cache fetch (one lookup
    # per distinct call instead of one per duplicate).
    MergeIdenticalOps(),
    # After fold/prune/merge, which leave unreferenced operators behind; before the fetch, so
    # dead calls are never looked up.
    EliminateDeadOps(),
    # Last rewrite: needs final, folded and merged prompts to key the cache exactly.
    FetchCachedResults(),
    # Again: a call answered for every row drops its prompt operators from the live set.
    EliminateDeadOps(),
)

RULE_NAMES = tuple(dict.fromkeys(rule.name for rule in RULES))

__all__ = ["RULES", "RULE_NAMES", "EliminateDeadOps", "FetchCachedResults", "FoldConstants",
           "MergeIdenticalOps", "PruneSwitches", "UnrollLoops"]
