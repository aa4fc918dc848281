"""Output PII the caller did not send is masked, streamed or not, whatever chunks the model's
text arrives in. The ingress runs with the real guard core (real detectors and embedder, no
Ray); the LLM is a scripted fake that sends a fixed answer in chosen pieces, so the test
controls the PII in the output instead of hoping a model writes it (the real model's
answer differs between machines)."""

from __future__ import annotations

import json
from typing import AsyncIterator

import pytest
from fastapi.testclient import TestClient

from deployments.guardrail.core import EmbassyGuardrail
from deployments.ingress.app import create_app
from deployments.ingress.core import ChatService
from embassy.graph_types import GenerationDelta, GenerationRequest, GuardVerdict, RequestContext
from embassy.settings import EmbassySettings
from embassy.tenants import KeyStore, create_key
from tests.unit.ingress.test_app import MODEL, FakeGraphNodes

# (PII type as the guard masks it, an answer that carries one, the identifier itself): every
# type the guard claims, some written the ways that hide them (spaced digits, zero-width joiners).
LEAKS = [
    ("EMAIL", "Write to the broker at clearance.desk@brokerage-example.com before noon.",
     "clearance.desk@brokerage-example.com"),
    ("PHONE", "Call the duty office on +44 20 7946 0958 for the release.", "+44 20 7946 0958"),
    ("IBAN", "Pay the duty to DE89 3704 0044 0532 0130 00 within ten days.", "DE89 3704 0044 0532 0130 00"),
    ("CREDIT_CARD", "The card on file is 4111 1111 1111 1111 for the storage fees.", "4111 1111 1111 1111"),
    ("US_SSN", "The importer's SSN is 123-45-6789 according to the form.", "123-45-6789"),
    ("IP_ADDRESS", "The portal host 192.168.10.24 timed out during the upload.", "192.168.10.24"),
    ("UK_NINO", "Her NI number AB 12 34 56 C is on the form.", "AB 12 34 56 C"),
    ("AADHAAR", "The exporter's Aadhaar 2341 2341 2346 was verified.", "2341 2341 2346"),
    ("AADHAAR", "The exporter's Aadhaar 2 3 4 1 2 3 4 1 2 3 4 6 was verified.", "2 3 4 1 2 3 4 1 2 3 4 6"),
    ("PAN", "The importer's PAN ABCPE1234F is on the bill of entry.", "ABCPE1234F"),
    ("NRIC", "The NRIC S1234567D belongs to the consignee.", "S1234567D"),
    ("EMIRATES_ID", "The Emirates ID 784-1980-1234567-8 is attached.", "784-1980-1234567-8"),
    ("PASSPORT", "The Passport number: X1234567 expires soon.", "X1234567"),
    ("DATE_OF_BIRTH", "She was born on 12/03/1984 in Porto.", "12/03/1984"),
    ("PERSON", "The consignee is Maria Gonzalez from Madrid.", "Maria Gonzalez"),
    ("ADDRESS", "Deliver to 221 Baker Street, Suite 4 by Monday.", "221 Baker Street, Suite 4"),
]


class ScriptedLLMWithRealGuard(FakeGraphNodes):
    """The fake graph, but the guard checks are the real guard core's, and the model sends
    `answer` cut at `cuts` (character offsets)."""

    def __init__(self, guard: EmbassyGuardrail) -> None:
        super().__init__()
        self.real_guard = guard
        self.answer, self.cuts = "", ()

    async def check_input(self, request: GenerationRequest) -> GuardVerdict:
        return self.real_guard.screen_input(request)

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationDelta]:
        bounds = [0, *sorted(c for c in self.cuts if 0 < c < len(self.answer)), len(self.answer)]
        pieces = [self.answer[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]
        for i, piece in enumerate(pieces):
            yield GenerationDelta(piece, i + 1, 9, "stop" if i == len(pieces) - 1 else None)

    async def check_output(self, ctx: RequestContext, text: str, redactions=None, final=True, sent="",
                           system_prompts=(), context=()) -> GuardVerdict:
        return self.real_guard.screen_output(ctx.tenant, text, redactions, final, sent, system_prompts, context)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pii")
    settings = EmbassySettings.model_validate({
        "region": "eu", "models": [MODEL], "keys_file": str(tmp / "keys.yaml"), "state_dir": str(tmp),
        "tenants": {"acme": {"jurisdiction": "EU", "models": [MODEL]}},
        "guardrail": {"topics_file": None}})
    nodes = ScriptedLLMWithRealGuard(EmbassyGuardrail(settings))
    service = ChatService(settings, KeyStore.from_settings(settings), nodes, {MODEL: 100})

    async def ready():
        return nodes.readiness()
    client = TestClient(create_app(service, ready))
    return client, nodes, {"Authorization": f"Bearer {create_key(settings.keys_path, 'acme')}"}


def ask(client, headers, stream: bool) -> tuple[str, str, dict]:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Who do I contact about the release?"}],
            "stream": stream, "max_tokens": 64}
    r = client.post("/v1/chat/completions", json=body, headers=headers)
    assert r.status_code == 200, r.text
    if not stream:
        data = r.json()
        return data["choices"][0]["message"]["content"], data["choices"][0]["finish_reason"], data["embassy"]
    text, finish, extension = "", None, {}
    for line in r.text.splitlines():
        if line.startswith("data: {"):
            chunk = json.loads(line[6:])
            assert "error" not in chunk, chunk
            for choice in chunk.get("choices", []):
                text += choice["delta"].get("content") or ""
                finish = choice.get("finish_reason") or finish
            extension = chunk.get("embassy") or extension
    return text, finish, extension


@pytest.mark.parametrize("kind,answer,value", LEAKS, ids=[k for k, _, _ in LEAKS])
def test_output_pii_is_masked_at_every_chunk_boundary(stack, kind, answer, value):
    client, nodes, headers = stack
    start = answer.index(value)
    nodes.answer = answer
    nodes.cuts = ()
    whole, finish, extension = ask(client, headers, stream=False)
    assert value not in whole and f"[{kind}]" in whole, whole
    assert finish == "content_filter"
    assert extension["guardrail"]["output"] == {"action": "redact", "category": "pii_leak"}
    # One character per delta, then every single cut inside and around the identifier.
    for cuts in [tuple(range(1, len(answer)))] + [(c,) for c in range(start - 1, start + len(value) + 2)]:
        nodes.cuts = cuts
        streamed, stream_finish, stream_extension = ask(client, headers, stream=True)
        # The same masked text as the whole answer: not a character of the identifier left.
        assert (streamed, stream_finish) == (whole, "content_filter"), (cuts, streamed)
        assert stream_extension["guardrail"]["output"]["category"] == "pii_leak"


def test_an_answer_without_pii_passes_unchanged_streamed_or_not(stack):
    client, nodes, headers = stack
    nodes.answer, nodes.cuts = "File the EX-1 declaration with heading 8471.30 and 12 cartons.", (5, 17, 30)
    assert ask(client, headers, stream=False)[:2] == (nodes.answer, "stop")
    assert ask(client, headers, stream=True)[:2] == (nodes.answer, "stop")


SYSTEM = ("Harbourside brokerage desk notes: tariff classification, origin rules and shipment documents are "
          "answered in short plain sentences; escalations to the senior broker carry the reference ORCHID-42.")


def test_a_stream_never_sends_more_of_the_system_prompt_than_the_leak_check_allows(stack):
    """The model repeats the caller's system message: the whole answer is withheld, and
    a stream, cut anywhere, stops before what it sent reaches the leak check's overlap."""
    from deployments.guardrail.validators import SystemPromptLeakValidator

    client, nodes, headers = stack
    limit = {"system_prompts": (SYSTEM,), "max_overlap": 0.5}  # the setting's default
    nodes.answer = "Of course. My instructions say: " + SYSTEM + " Is there anything else?"
    body = {"model": MODEL, "messages": [{"role": "system", "content": SYSTEM},
                                         {"role": "user", "content": "What is an EORI number?"}], "max_tokens": 64}
    nodes.cuts = ()
    whole = client.post("/v1/chat/completions", json=body, headers=headers).json()
    assert "choices" in whole, whole
    assert whole["choices"][0]["finish_reason"] == "content_filter"
    assert "ORCHID-42" not in whole["choices"][0]["message"]["content"]
    for cuts in [tuple(range(1, len(nodes.answer)))] + [(c,) for c in range(1, len(nodes.answer), 9)]:
        nodes.cuts = cuts
        r = client.post("/v1/chat/completions", json={**body, "stream": True}, headers=headers)
        text, finish = "", None
        for line in r.text.splitlines():
            if line.startswith("data: {"):
                for choice in json.loads(line[6:]).get("choices", []):
                    text += choice["delta"].get("content") or ""
                    finish = choice.get("finish_reason") or finish
        received = text.replace("[withheld: the answer repeated the system prompt]", "")
        assert finish == "content_filter", (cuts, text)
        if len(cuts) > 1:  # one character per delta: the text before the leak was streamed
            assert received.startswith("Of course. My instructions say:"), received
        assert SystemPromptLeakValidator().validate(received, limit).outcome == "pass", (cuts, received)
