"""Methods from the literature in three roles, each a registry by name:

- `attnsieve.methods.prefill`: planners (``plan(q, k) -> Layout``) for sparse prefill;
- `attnsieve.methods.kv`: KV-cache policies (``compress(view) -> Kept``);
- `attnsieve.methods.decode`: decode selectors (``select(q, view, step) -> Pages``).
"""

from attnsieve.methods.decode import SELECTORS, get_selector
from attnsieve.methods.kv import POLICIES, get_policy
from attnsieve.methods.prefill import PLANNERS, PerHeadPlanner, Planner, get_planner

__all__ = [
    "PLANNERS",
    "POLICIES",
    "SELECTORS",
    "PerHeadPlanner",
    "Planner",
    "get_planner",
    "get_policy",
    "get_selector",
]
