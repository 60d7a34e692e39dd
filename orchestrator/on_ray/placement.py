"""How many replicas of each stage a Ray cluster holds, and what each reserves, decided before the run starts.

    stages (replicas, threads, num_gpus, resources) + alive nodes' totals
        ─▶ one replica of every stage first, packed onto the nodes (a stage without its first would stall
           the whole stream: every video passes every stage)
        ─▶ then extra replicas, one per stage in turn, each only where it still fits
        ─▶ stages without `threads` share CPUs (1/2, 1/3, … of one each) when one CPU per replica does not
           hold every replica, as the local executor shares cores among replicas; a stage with `threads`
           keeps its reservation (its replicas run that many threads)
        ─▶ a cluster that cannot hold one replica of every stage: one line saying what it has and lacks

A replica's reservation is also what the run checks again while one waits for Ray to place it: when no alive
node could hold it any more (the only node with its GPU or custom resource left), the run ends saying so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from orchestrator.errors import ConfigError

if TYPE_CHECKING:
    from orchestrator.on_ray.ray_worker import RayWorker

_EPSILON = 1e-6
"""Slack when comparing Ray's float resource amounts."""


@dataclass(frozen=True)
class StageDemand:
    """What a stage asks of the cluster: replicas, and per replica its threads, GPU share and resources."""

    name: str
    replicas: int
    threads: int
    threads_set: bool
    """The stage says `threads`: each replica reserves that many CPUs. Otherwise it may share one."""
    num_gpus: float = 0.0
    resources: Mapping[str, float] | None = None

    def bundle(self, cpus: float) -> dict[str, float]:
        """What one replica reserves, as Ray names the resources (only the nonzero ones)."""
        wanted = {"CPU": cpus, "GPU": self.num_gpus, **(self.resources or {})}
        return {name: amount for name, amount in wanted.items() if amount > 0}


@dataclass(frozen=True)
class ReplicaPlan:
    """Per stage: the CPUs one replica reserves and how many replicas start; `notes` say what differs from
    the config (shared CPUs, replicas left out), one line each."""

    cpus: Mapping[str, float]
    replicas: Mapping[str, int]
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class RayPolicy:
    """How long the driver waits on Ray for what, beside the stage's own WorkerPolicy."""

    placement_timeout_s: float = 120.0
    """A replica Ray has not placed for this long, while no replica of its stage is placed and no node has
    the room for one free, ends the run (the cluster's resources are held by other work)."""
    start_timeout_s: float = 600.0
    """A replica not placed for this long, while no replica of its stage is placed though a node has room for
    one, ends the run: Ray is failing to start its worker there (a loaded or broken node starts slowly, so
    this is far longer than the placement timeout)."""
    placement_check_s: float = 2.0
    """How often a replica waiting to be placed checks that an alive node could still hold it."""
    host_margin_s: float = 10.0
    """Beyond a request's deadline, which the host enforces on its worker, how long the driver waits for the
    host's answer before it counts the host itself as hung and kills its actor."""
    stop_margin_s: float = 5.0
    """Beyond the host's own stop (the policy's shutdown and term graces), how long the driver waits before
    it ends the actor."""


@dataclass
class StagePlacement:
    """What one replica of a stage reserves on Ray, and which of the stage's replicas Ray has placed (shared
    by the stage's replicas, which one pool thread drives)."""

    stage: str
    options: Mapping[str, Any]
    """Ray actor options: num_cpus, num_gpus, resources, max_concurrency."""
    placed: set[RayWorker] = field(default_factory=set)

    @property
    def bundle(self) -> dict[str, float]:
        wanted = {"CPU": self.options["num_cpus"], "GPU": self.options["num_gpus"], **self.options["resources"]}
        return {name: amount for name, amount in wanted.items() if amount}


def plan_replicas(demands: Sequence[StageDemand], nodes: Sequence[Mapping[str, float]]) -> ReplicaPlan:
    """The replicas the cluster's `nodes` (each node's total resources) hold at once, first one of every stage.
    Raises ConfigError, in one line, when not even one replica of every stage fits."""
    for demand in demands:
        if (missing := lacking(demand.bundle(_smallest_share(demand, demands)), nodes)) is not None:
            raise ConfigError(f"stage {demand.name!r}: no node of the Ray cluster can hold one replica: {missing}; "
                              f"lower the stage's threads, num_gpus or resources, or add such a node")
    _check_totals(demands, nodes)
    best: tuple[int, float, dict[str, int]] | None = None
    for share in _shares(demands):
        counts = _pack(demands, share, nodes)
        if counts is not None and (best is None or sum(counts.values()) > best[0]):
            best = (sum(counts.values()), share, counts)
        if best is not None and best[0] == sum(d.replicas for d in demands):
            break
    if best is None:
        firsts = ", ".join(f"{d.name} {amounts(d.bundle(_smallest_share(d, demands)))}" for d in demands)
        raise ConfigError(f"the Ray cluster's nodes cannot hold one replica of every stage at once (each node: "
                          f"{_nodes(nodes)}; one replica of each: {firsts}): add a node, or lower the stages' "
                          f"threads, num_gpus or resources")
    _, share, counts = best
    return ReplicaPlan({d.name: share if not d.threads_set else float(d.threads) for d in demands}, counts,
                       _notes(demands, share, counts, _total(nodes, "CPU")))


def lacking(bundle: Mapping[str, float], nodes: Sequence[Mapping[str, float]]) -> str | None:
    """None when some node's totals hold `bundle`; else what no node has, for an error message."""
    if any(_holds(node, bundle) for node in nodes):
        return None
    short = [f"{name}={amount:g} (the most any node has is {max((n.get(name, 0) for n in nodes), default=0):g})"
             for name, amount in bundle.items() if all(n.get(name, 0) + _EPSILON < amount for n in nodes)]
    together = f"{amounts(bundle)} on one node (nodes: {_nodes(nodes)})"
    return f"it needs {', '.join(short)}" if short else f"it needs {together}"


def _smallest_share(demand: StageDemand, demands: Sequence[StageDemand]) -> float:
    return float(demand.threads) if demand.threads_set else _shares(demands)[-1]


def _shares(demands: Sequence[StageDemand]) -> list[float]:
    """CPUs to try for one replica of a stage without `threads`, largest first: one (Ray's default), then
    1/2, 1/3, … down to one CPU shared by all such replicas. Fractions of one pack without waste onto nodes
    with whole CPUs."""
    sharing = sum(d.replicas for d in demands if not d.threads_set)
    return [1.0 / k for k in range(1, max(1, sharing) + 1)]


def _check_totals(demands: Sequence[StageDemand], nodes: Sequence[Mapping[str, float]]) -> None:
    """One replica of every stage against the cluster's totals, resource by resource, so the error names
    the resource and every stage's part of it."""
    firsts = {d.name: d.bundle(_smallest_share(d, demands)) for d in demands}
    for resource in sorted({name for bundle in firsts.values() for name in bundle}):
        needed = sum(bundle.get(resource, 0) for bundle in firsts.values())
        have = _total(nodes, resource)
        if needed <= have + _EPSILON:
            continue
        parts = ", ".join(f"{name}={bundle[resource]:.3g}" for name, bundle in firsts.items() if resource in bundle)
        plural = "" if have == 1 else "s"
        what = {"CPU": f"CPU{plural}", "GPU": f"GPU{plural}"}.get(resource, f"of resource {resource!r}")
        fix = {"CPU": "add nodes, or lower the stages' `threads` (a stage without `threads` shares CPUs)",
               "GPU": "add GPUs, or run models that declare a smaller num_gpus"}.get(
            resource, f"add nodes that advertise {resource!r}, or lower the stages' resources")
        raise ConfigError(f"the Ray cluster has {have:g} {what}; one replica of every stage needs {needed:.3g} "
                          f"(stages {parts}): {fix}")


def _pack(demands: Sequence[StageDemand], share: float,
          nodes: Sequence[Mapping[str, float]]) -> dict[str, int] | None:
    """Replicas per stage placed first-fit onto the nodes: every stage's first (largest first), then one more
    per stage in turn while any fits. None when the firsts do not all fit."""
    free = [dict(node) for node in nodes]
    bundles = {d.name: d.bundle(float(d.threads) if d.threads_set else share) for d in demands}
    for demand in sorted(demands, key=lambda d: sorted(bundles[d.name].values(), reverse=True), reverse=True):
        if not _take(free, bundles[demand.name]):
            return None
    counts = {d.name: 1 for d in demands}
    growing = [d for d in demands if d.replicas > 1]
    while growing:
        for demand in list(growing):
            if _take(free, bundles[demand.name]):
                counts[demand.name] += 1
            if not _take_possible(counts, demand, free, bundles):
                growing.remove(demand)
    return counts


def _take_possible(counts: dict[str, int], demand: StageDemand, free: list[dict[str, float]],
                   bundles: Mapping[str, Mapping[str, float]]) -> bool:
    return counts[demand.name] < demand.replicas and any(_holds(node, bundles[demand.name]) for node in free)


def _take(free: list[dict[str, float]], bundle: Mapping[str, float]) -> bool:
    for node in free:
        if _holds(node, bundle):
            for name, amount in bundle.items():
                node[name] = node.get(name, 0) - amount
            return True
    return False


def _holds(node: Mapping[str, float], bundle: Mapping[str, float]) -> bool:
    return all(node.get(name, 0) + _EPSILON >= amount for name, amount in bundle.items())


def _notes(demands: Sequence[StageDemand], share: float, counts: Mapping[str, int], cpus: float) -> tuple[str, ...]:
    notes = []
    sharing = [d.name for d in demands if not d.threads_set]
    if share < 1 and sharing:
        notes.append(f"the Ray cluster's {cpus:g} CPUs cannot hold every replica at one CPU each: replicas of "
                     f"{', '.join(map(repr, sharing))} reserve {share:.3g} CPU each and share CPUs (a stage's "
                     f"`threads` sets what its replicas reserve)")
    for demand in demands:
        if counts[demand.name] < demand.replicas:
            notes.append(f"stage {demand.name!r}: {counts[demand.name]} of its {demand.replicas} replicas fit the "
                         f"Ray cluster beside the other stages; the rest are not started (add nodes, or lower "
                         f"its threads, num_gpus or resources)")
    return tuple(notes)


def alive_nodes(ray: Any) -> list[dict[str, float]]:
    """Each alive node's total resources."""
    return [dict(node["Resources"]) for node in ray.nodes() if node.get("Alive")]


def free_nodes(ray: Any) -> list[dict[str, float]]:
    """Each alive node's resources not reserved now; the cluster's free total as one node where this Ray
    cannot tell them apart."""
    try:
        from ray._private.state import available_resources_per_node
        return [dict(free) for free in available_resources_per_node().values()]
    except Exception:  # noqa: BLE001 - a Ray without the per-node view (a ray:// client, an older Ray, a GCS hiccup)
        return [dict(ray.available_resources())]


def _total(nodes: Sequence[Mapping[str, float]], resource: str) -> float:
    return sum(node.get(resource, 0) for node in nodes)


def amounts(bundle: Mapping[str, float]) -> str:
    return ", ".join(f"{name}={amount:g}" for name, amount in bundle.items())


def _nodes(nodes: Sequence[Mapping[str, float]]) -> str:
    shown = ("; ".join(amounts({k: v for k, v in sorted(n.items()) if not k.startswith("node:")
                                 and "memory" not in k and not k.startswith("accelerator_type")}) for n in nodes))
    return shown or "none"
