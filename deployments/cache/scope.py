"""What an entry is keyed on: everything that must match exactly, and the one text matched
by meaning (the last user message).

An entry is served only within its scope: the same region, tenant, model id and version,
system prompt, earlier turns, and the generation parameters that shape the answer
(max_tokens, stop, ignore_eos, min_tokens, response_format). Sampling hotter than the configured maximum
makes a request uncacheable: its answer is a draw, not the answer.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from dataclasses import dataclass

from embassy.graph_types import GenerationRequest


@dataclass(frozen=True)
class CacheScope:
    key: str  # sha256 of the exact-match part
    query: str  # the last user message, matched by meaning
    tenant: str
    region: str
    model: str
    model_version: str

    def entry_key(self) -> str:
        """One entry per scope and query text up to case, spacing and closing punctuation
        (the exact tier): storing it again replaces it."""
        return hashlib.sha256(f"{self.key}\0{exact_form(self.query)}".encode()).hexdigest()


def exact_form(text: str) -> str:
    """What the exact tier compares: "How do I get an EORI number?" and "how do i get an
    eori number" ask the same words. Only case, whitespace, quote style and trailing
    punctuation are folded; any other difference goes to the meaning tier."""
    text = unicodedata.normalize("NFKC", text).replace("’", "'").casefold()
    return re.sub(r"\s+", " ", text).strip().rstrip("?!.。？！ ")


def uncacheable_reason(request: GenerationRequest, max_temperature: float) -> str | None:
    if request.sampling.temperature > max_temperature:
        return (f"temperature {request.sampling.temperature:g} is above {max_temperature:g}: "
                "sampled answers are neither stored nor served")
    if not request.messages or request.messages[-1].role != "user":
        return "the last message is not a user message"
    return None


def scope_of(request: GenerationRequest, model_version: str) -> CacheScope:
    *earlier, last = request.messages
    s = request.sampling
    exact = {
        "region": request.ctx.region, "tenant": request.ctx.tenant, "jurisdiction": request.ctx.jurisdiction,
        "model": request.model, "model_version": model_version,
        # System prompts and earlier turns, in order: a different conversation is a
        # different question even when its last message reads the same.
        "context": [[m.role, m.content] for m in earlier],
        "max_tokens": s.max_tokens, "stop": list(s.stop), "ignore_eos": s.ignore_eos,
        "min_tokens": s.min_tokens,
        # Only when set, so that free-text entries keep the scope they had before.
        **({"response_format": s.response_format} if s.response_format else {}),
    }
    digest = hashlib.sha256(json.dumps(exact, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
    return CacheScope(digest, last.content, request.ctx.tenant, request.ctx.region, request.model,
                      model_version)
