"""One screened generation, the same for `stream: true` and `false`: the answer to a
prepared request as the pieces of text the output guard lets out, then an `Outcome`
(finish reason, usage, verdicts). The routes only map it to JSON or to SSE.

A streamed answer is screened as it grows (the first text at once, then every
`stream_screen_chars` new characters); a whole answer once, at the end. Either way the
final check reads the whole answer, and only the model's own text can go into the cache.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from typing import AsyncIterator, Callable

from deployments.ingress.recording import Recorder
from deployments.ingress.request_state import Prepared, RequestRecord
from embassy.errors import RequestTimeout
from embassy.graph_types import GenerationDelta, GuardVerdict

_WORDS = re.compile(r"\S+\s*|\s+")


async def within(deadline: float, awaitable):
    """`awaitable`, or RequestTimeout at `deadline` (the event loop's clock)."""
    # asyncio.timeout_at arms one timer; wait_for would start a task per streamed chunk.
    try:
        async with asyncio.timeout_at(deadline):
            return await awaitable
    except TimeoutError:
        raise RequestTimeout("The request timed out.") from None


@dataclass
class Outcome:
    finish: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    output: GuardVerdict | None = None  # what the response reports: a filtering verdict, else the last
    final: GuardVerdict | None = None  # the last check, the one that scored groundedness


class ScreenedGeneration:
    """`start()` then iterate `pieces()`; `outcome` is set once the pieces end normally.

    `settle(prepared, cacheable answer or None, completion tokens)` runs exactly once after
    a model call, however it ends: it frees requests waiting on this one and may cache it.
    """

    def __init__(self, p: Prepared, nodes, recorder: Recorder, record: RequestRecord,
                 settle: Callable[[Prepared, str | None, int], None], *, deadline: float,
                 screen_every: int | None, tenant_label: str) -> None:
        self.p, self.nodes, self.recorder, self.record = p, nodes, recorder, record
        self._settle = settle
        self.deadline = deadline
        self.screen_every = screen_every  # None: screen the whole answer once
        self.tenant_label = tenant_label
        self.outcome: Outcome | None = None
        self._gen: AsyncIterator[GenerationDelta] | None = None
        self._first: GenerationDelta | None = None
        self._t0 = 0.0

    async def start(self) -> None:
        """Wait for the model's first delta. Whatever can fail with an HTTP status (the
        deadline, the engine refusing the request) fails here, before a byte is sent."""
        if not self.p.needs_model:
            return
        self._gen = self.nodes.generate(self.p.model_request)
        self._t0 = time.perf_counter()
        try:
            self._first = await within(self.deadline, anext(self._gen))
        except StopAsyncIteration:
            self._first = None
        except BaseException:
            await self._gen.aclose()
            self._settle(self.p, None, 0)
            raise
        self.recorder.first_token(self.p.body.model, self.p.started, self.record)

    def pieces(self) -> AsyncIterator[str]:
        return self._from_model() if self._gen is not None else self._without_model()

    def _check(self, text: str, final: bool, sent: str = ""):
        p = self.p
        # The screened request's system messages: the caller's own and the configured one.
        system_prompts = tuple(m.content for m in p.request.messages if m.role == "system")
        context = tuple(passage.text for passage in p.model_request.passages)  # what the model read
        return self.recorder.timed(p.timings, "guardrail_output", self.nodes.check_output(
            p.ctx, text, p.guard_input.redactions, final, sent, system_prompts, context))

    async def _without_model(self) -> AsyncIterator[str]:
        """A cache hit or the no-answer text, a few words per piece. A hit passes the output
        guard again: whoever can write the region's Redis could otherwise plant an answer
        that no guard ever read."""
        p = self.p
        self.record.answer = p.canned or p.cache.text  # stored text: redacted
        if p.canned is not None:
            text = p.canned
        else:
            verdict = await self._check(p.cache.text or "", True)
            text = p.answer_from_cache() if verdict.allowed else verdict.text or ""
        self.recorder.first_token(p.body.model, p.started, self.record)
        for piece in _WORDS.findall(text):
            yield piece
        self.outcome = Outcome("stop")

    async def _from_model(self) -> AsyncIterator[str]:
        p, gen = self.p, self._gen
        first_at = time.perf_counter()  # the first delta has arrived
        raw: list[str] = []  # the model's own (redacted) text: what the cache may keep
        cacheable = None
        prompt_tokens = completion_tokens = 0
        finish = None
        pending = sent = ""  # model text not yet screened / already screened and let out
        verdicts: list[GuardVerdict] = []
        fresh = 0  # characters that came since the last check

        async def screen(final: bool) -> str:
            """Pass the pending text through the output guard; return what may go out."""
            nonlocal pending, sent
            v = await self._check(pending, final, sent)
            verdicts.append(v)
            sent += pending[:v.consumed]
            pending = pending[v.consumed:]
            return v.text or ""

        try:
            try:
                delta = self._first
                while delta is not None:
                    prompt_tokens = delta.prompt_tokens or prompt_tokens
                    completion_tokens += delta.completion_tokens
                    finish = delta.finish_reason or finish
                    pending += delta.text
                    raw.append(delta.text)
                    fresh += len(delta.text)
                    # The first text is screened as soon as the guard may release any (time
                    # to first token); then every `screen_every` characters, since each check
                    # costs the guard CPU beside the engine.
                    if self.screen_every is not None and delta.text and (not sent or fresh >= self.screen_every):
                        fresh = 0
                        if text := await screen(final=False):
                            yield text
                        if verdicts[-1].category == "system_prompt_leak":
                            break  # stop generating: closing the stream aborts the engine request
                    try:
                        delta = await within(self.deadline, anext(gen))
                    except StopAsyncIteration:
                        delta = None
            finally:
                await gen.aclose()
                self.recorder.stage(p.timings, "llm", self._t0)
                self.recorder.inter_token(p.body.model, first_at, completion_tokens, self.record)
            if not verdicts or verdicts[-1].category != "system_prompt_leak":
                if text := await screen(final=True):
                    yield text
            filtered = [v for v in verdicts if not v.allowed]
            self.recorder.groundedness(verdicts[-1], self.record)
            if filtered:
                finish = "content_filter"
            elif finish in ("stop", "length") and not verdicts[-1].unsupported:  # flagged: never cached
                cacheable = "".join(raw)
            output = filtered[-1] if filtered else verdicts[-1]
            self.recorder.usage(self.tenant_label, p.body.model, prompt_tokens, completion_tokens)
            self.record.answer = "".join(raw)  # the model's own text: placeholders, not the caller's values
            self.record.finish, self.record.output_guard = finish, output.category
            self.record.tokens = [prompt_tokens, completion_tokens]
            self.outcome = Outcome(finish or "stop", prompt_tokens, completion_tokens, output, verdicts[-1])
        finally:
            self._settle(p, cacheable, completion_tokens)
