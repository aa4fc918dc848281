"""Model lifecycle operations on a running region: deploy a version (a full swap or a
canary), promote, roll back, judge a canary. `embassy models` calls these; each change goes
through Serve's declarative config, the same path as `embassy apply` (`Region.apply`).

A swap never stops the serving version before the new one runs:
1. the new version's application is added with no traffic, and must reach RUNNING (a
   version that does not start is removed again; the stable version never stopped);
2. the ingress's routes move the traffic (its `user_config`, applied in place);
3. the old version's application is removed; Serve drains its requests first
   (`rollout.drain_s`); the old version's cache entries are invalidated.
At most one extra LLM replica runs during a swap (the new version's, with one replica each).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from embassy.canary import Verdict, judge
from embassy.model_routes import ModelRoute, RolloutState, effective_routes
from embassy.settings import EmbassySettings


class RolloutError(Exception):
    """An operation refused or undone; the message says why and what keeps serving."""


@dataclass
class Region:
    """The running region the operations act on, and its side effects (injectable for tests)."""

    settings: EmbassySettings
    state_file: Path
    deploy: Callable[[], None]  # re-deploy from the state file; raises stack.DeployFailed
    audit: Callable[[str, dict], None]
    invalidate_cache: Callable[[str, str], int | None]  # (model, version) -> entries removed
    samples: Callable[[str, str], list] | None = None  # (model, version) -> canary.Sample list
    clear_samples: Callable[[str, list[str]], None] | None = None

    def routes(self) -> dict[str, ModelRoute]:
        return effective_routes(self.settings, RolloutState.read(self.state_file))

    def route(self, model: str) -> ModelRoute:
        routes = self.routes()
        if model not in routes:
            raise RolloutError(f"model {model!r} is not served in region {self.settings.region}; "
                               f"it serves {', '.join(sorted(routes))}")
        return routes[model]

    def apply(self, model: str, route: ModelRoute) -> None:
        """Write the route and deploy it; on failure the previous state is written back."""
        state = RolloutState.read(self.state_file)
        before = state.model_copy(deep=True)
        state.models[model] = route
        state.write(self.state_file)
        try:
            self.deploy()
        except BaseException:
            before.write(self.state_file)
            raise


def _retire(region: Region, model: str, new: ModelRoute, old_version: str, action: str, reason: str) -> dict:
    """Move all traffic per `new`, then remove `old_version` once its requests drained."""
    region.apply(model, new.model_copy(update={"retiring": (old_version,)}))
    region.apply(model, new)
    removed = region.invalidate_cache(model, old_version)
    if region.clear_samples is not None:
        region.clear_samples(model, [old_version, new.stable])
    fields = {"model": model, "stable": new.stable, "retired": old_version, "reason": reason,
              "cache_entries_removed": removed}
    region.audit(action, fields)
    return fields


def deploy(region: Region, ref: str, canary_percent: float | None = None, sticky: bool = False,
           prepare: Callable | None = None) -> dict:
    """Deploy `ID@VERSION`: all traffic (default) or a canary share of it.

    Raises:
        UnknownModel: no such id or version.
        PreparationError: the version's source fails its checksum (nothing was deployed).
        RolloutError: a canary already runs, the version is already stable, or it did not
            start (its application is removed again; the stable version kept serving).
    """
    from embassy.stack import DeployFailed
    from models.registry import parse_ref

    model, version = parse_ref(ref)
    manifest = region.settings.registry().get_version(model, version)
    version = manifest.version
    current = region.route(model)
    if current.canary is not None:
        raise RolloutError(f"{model}@{current.canary} runs as a canary; promote or roll it back first")
    if version == current.stable:
        raise RolloutError(f"{model}@{version} is already the stable version")
    if canary_percent is not None and not 0 < canary_percent < 100:
        raise RolloutError("--canary must be a percentage between 0 and 100 (exclusive)")
    if prepare is not None:
        prepare(manifest)  # checksums before anything is deployed
    try:
        region.apply(model, current.model_copy(update={"canary": version, "canary_percent": 0.0}))
    except DeployFailed as exc:
        region.deploy()  # the state was restored: this removes the failed application
        region.audit("model.deploy_failed", {"model": model, "version": version, "stable": current.stable,
                                             "reason": exc.message[:2000]})
        raise RolloutError(f"{model}@{version} did not start, so nothing was switched and "
                           f"{model}@{current.stable} keeps serving. Serve said: {exc.message}") from None
    if canary_percent is None:
        return _retire(region, model, ModelRoute(stable=version, previous=current.stable), current.stable,
                       "model.deploy", "full swap")
    route = current.model_copy(update={"canary": version, "canary_percent": float(canary_percent),
                                       "sticky": sticky})
    region.apply(model, route)
    if region.clear_samples is not None:
        region.clear_samples(model, [current.stable, version])
    fields = {"model": model, "stable": current.stable, "canary": version, "canary_percent": canary_percent,
              "sticky": sticky}
    region.audit("model.canary", fields)
    return fields


def promote(region: Region, model: str, reason: str = "promoted by an operator", full: bool = False) -> dict:
    """The canary's next traffic step (`rollout.steps`), or all of it at the last step or `full`."""
    route = region.route(model)
    if route.canary is None:
        raise RolloutError(f"{model} has no canary to promote")
    higher = [s for s in region.settings.rollout.steps if s > route.canary_percent]
    if full or not higher or higher[0] >= 100:
        return _retire(region, model, ModelRoute(stable=route.canary, previous=route.stable), route.stable,
                       "model.promote", reason)
    region.apply(model, route.model_copy(update={"canary_percent": float(higher[0])}))
    if region.clear_samples is not None:  # each step is judged on its own requests
        region.clear_samples(model, [route.stable, route.canary])
    fields = {"model": model, "stable": route.stable, "canary": route.canary, "canary_percent": higher[0],
              "reason": reason}
    region.audit("model.promote_step", fields)
    return fields


def rollback(region: Region, model: str, reason: str = "rolled back by an operator") -> dict:
    """Drop the canary; without one, swap back to the version served before the last swap."""
    route = region.route(model)
    if route.canary is not None:
        return _retire(region, model, ModelRoute(stable=route.stable, previous=route.previous), route.canary,
                       "model.rollback", reason)
    if route.previous is None:
        raise RolloutError(f"{model} has no canary and no earlier version to roll back to")
    fields = deploy(region, f"{model}@{route.previous}")
    region.audit("model.rollback", {**fields, "reason": reason})
    return fields


def analyse(region: Region, model: str) -> Verdict:
    route = region.route(model)
    if route.canary is None or region.samples is None:
        raise RolloutError(f"{model} has no canary to judge")
    r = region.settings.rollout
    return judge(region.samples(model, route.stable), region.samples(model, route.canary),
                 min_requests=r.min_requests, alpha=r.alpha, latency_tolerance=r.latency_tolerance,
                 rate_tolerance=r.rate_tolerance)


def watch(region: Region, model: str, report: Callable[[ModelRoute, Verdict], None] = lambda r, v: None,
          timeout_s: float | None = None, sleep: Callable[[float], None] = time.sleep) -> dict:
    """Judge the canary every `analysis_interval_s`: promote a step when it passes, roll back
    when it is worse, until it is the stable version or gone. Returns the last action."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        route = region.route(model)
        if route.canary is None:
            return {"model": model, "stable": route.stable, "result": "no canary"}
        verdict = analyse(region, model)
        report(route, verdict)
        if verdict.decision == "rollback":
            return {**rollback(region, model, reason=verdict.reason), "result": "rolled back"}
        if verdict.decision == "promote":
            action = promote(region, model, reason=verdict.reason)
            if region.route(model).canary is None:
                return {**action, "result": "promoted"}
        if deadline is not None and time.monotonic() > deadline:
            return {"model": model, "result": "timed out", "verdict": verdict.as_dict()}
        sleep(region.settings.rollout.analysis_interval_s)
