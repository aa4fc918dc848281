"""The grounded prompt: retrieved passages placed before the question, numbered as cited.

The last user message is replaced by the configured template filled with the numbered
sources and the question; earlier turns and system messages stay as they were. Only the
model sees this form: the cache keys and the output guard work on the caller's messages.
"""

from __future__ import annotations

import re
from dataclasses import replace

from embassy.graph_types import GenerationRequest, Message, Passage


def format_sources(passages: tuple[Passage, ...] | list[Passage]) -> str:
    return "\n\n".join(f"[{i}] ({p.source})\n{p.text}" for i, p in enumerate(passages, 1))


def grounded_request(request: GenerationRequest, template: str) -> GenerationRequest:
    """The request as the model gets it; unchanged when nothing was retrieved."""
    if not request.passages:
        return request
    messages = list(request.messages)
    last = max((i for i, m in enumerate(messages) if m.role == "user"), default=None)
    if last is None:
        return request
    # One pass over the template, not str.format: passages and questions may hold braces.
    values = {"sources": format_sources(request.passages), "question": messages[last].content}
    content = re.sub(r"\{(sources|question)\}", lambda m: values[m.group(1)], template)
    messages[last] = Message("user", content)
    return replace(request, messages=tuple(messages))
