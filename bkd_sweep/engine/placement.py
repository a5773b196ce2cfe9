"""Where a sweep's work may run. On a cluster, only on the nodes that passed preflight: a
node that joins later and fails its check (no data root, no shared storage) would fail every
trial Ray put on it, and one still being checked is not known to be fit. Ray labels each node
with its id (``ray.io/node-id``), so a label selector ``in(<passed ids>)`` keeps trials
(their placement groups, teacher jobs among them), Ray Train's workers and tasks on the
passed nodes.

The ids travel in the trial's Tune config (``nodes``), put there by the searcher when it
hands the trial out: Tune reads a trial's resources from its config once, when it creates
the trial, from a copy of the trainable it registered, so a live object would be stale.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

NODE_ID_LABEL = "ray.io/node-id"  # set by Ray on every node (ray.util.placement_group)


def node_selector(nodes: Iterable[str] | None) -> dict[str, str] | None:
    """The label selector that allows only ``nodes`` (None: anywhere, as on one machine)."""
    allowed = sorted(set(nodes or ()))
    if not allowed:
        return None
    return {NODE_ID_LABEL: f"in({','.join(allowed)})"}


@dataclass(frozen=True)
class TrialResources:
    """``tune.with_resources``' callable: a trial's one bundle (``cpu``, ``gpu``, ``memory``
    as Tune's resource dict names them), placed only on the nodes its config lists."""

    resources: dict[str, float] = field(default_factory=dict)

    def __call__(self, config: dict[str, Any]) -> Any:
        from ray.tune import PlacementGroupFactory
        from ray.tune.execution.placement_groups import resource_dict_to_pg_factory

        plain = resource_dict_to_pg_factory(dict(self.resources))
        selector = node_selector(config.get("nodes"))
        if selector is None:
            return plain  # the same request as a resource dict: Tune reuses its actors
        return PlacementGroupFactory(plain.bundles, plain.strategy,
                                     bundle_label_selector=[selector] * len(plain.bundles))
