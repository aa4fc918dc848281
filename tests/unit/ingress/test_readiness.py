"""/readyz's view of the graph (RayGraphNodes.fresh_readiness) with a deterministic fake of
Serve's status call: one call shared by concurrent probes, recent answers reused, and a
slow controller never holds a probe longer than the wait bound."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

from deployments.ingress.deployment import RayGraphNodes


def nodes_with_status(delay_s: float, ready: bool) -> tuple[RayGraphNodes, list[float]]:
    handle = SimpleNamespace(deployment_name="D")
    nodes = RayGraphNodes(handle, handle, handle, ["m"], region="eu", poll_s=10)
    calls: list[float] = []

    async def refresh():  # stands in for serve.status() on a busy controller
        calls.append(time.monotonic())
        await asyncio.sleep(delay_s)
        nodes._ready = {k: ready for k in nodes._ready}
        nodes._refreshed_at = time.monotonic()
        return nodes.readiness()
    nodes.refresh = refresh
    return nodes, calls


async def test_concurrent_probes_share_one_status_call_and_reuse_it():
    nodes, calls = nodes_with_status(0.05, ready=True)
    views = await asyncio.gather(*(nodes.fresh_readiness() for _ in range(10)))
    assert len(calls) == 1 and all(all(v.values()) for v in views)
    await nodes.fresh_readiness()  # within max_age: no new call
    assert len(calls) == 1


async def test_a_slow_controller_does_not_hold_the_probe():
    nodes, calls = nodes_with_status(5.0, ready=True)
    t0 = time.monotonic()
    view = await nodes.fresh_readiness(max_wait_s=0.2)
    assert time.monotonic() - t0 < 1.0
    assert view == {k: False for k in view}  # the last observed view (nothing seen yet)
    assert len(calls) == 1
