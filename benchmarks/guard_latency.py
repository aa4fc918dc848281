"""Latency of the whole input guard on ~200-token prompts, and what guardrails-ai's Guard adds.

Runs the guard core in this process (no Ray hop): normalization, PII (patterns + spaCy NER),
one MiniLM embedding, the injection classifier and the topic check. Then the PII validator
alone, called directly and through `Guard.validate`, to show the cost of Guard's bookkeeping.

    .venv/bin/python benchmarks/guard_latency.py [--n 300]

Targets (issue 3): input guard p50 <= 15 ms, p99 <= 40 ms on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from deployments.guardrail.core import EmbassyGuardrail  # noqa: E402
from deployments.guardrail.evaluation import latency_summary  # noqa: E402
from deployments.guardrail.validators import PiiValidator, build_guard  # noqa: E402
from embassy.graph_types import GenerationRequest, Message, RequestContext  # noqa: E402
from embassy.settings import PROJECT_ROOT, load_settings  # noqa: E402

SENTENCES = [
    "Please check the commercial invoice for shipment {i} from Hamburg to Singapore.",
    "The consignee is Maria Gonzalez, reachable at maria.g{i}@example.com or +44 20 7946 0958.",
    "It lists 240 cartons of cotton t-shirts under HS 6109.10 and 80 cartons of footwear.",
    "The incoterm is CIF and the declared value is EUR 48,000 including freight and insurance.",
    "Which documents are still missing for import clearance, and is a certificate of origin needed?",
    "Payment went to IBAN GB82 WEST 1234 5698 7654 32 last Tuesday.",
    "We also need to know whether the preferential tariff under the free trade agreement applies.",
    "The packing list shows a gross weight of 3,450 kg on six pallets.",
]


def prompt(i: int) -> str:
    """About 200 tokens of a realistic customs request."""
    return " ".join(s.format(i=i) for s in SENTENCES)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=300)
    args = parser.parse_args()
    settings = load_settings(PROJECT_ROOT / "cluster_configs" / "local.yaml", environ={})
    guard = EmbassyGuardrail(settings)
    ctx = RequestContext("bench", "dev", settings.region, "EU")

    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(str(settings.resolve(settings.model_store) / settings.registry()["smollm2-135m-instruct"].store_name))
    print(f"prompt tokens: {len(tok(prompt(0))['input_ids'])}", flush=True)

    whole, direct, guarded = [], [], []
    composed = build_guard(PiiValidator(guard.detector, on_fail="fix"))
    for i in range(args.n):
        request = GenerationRequest(ctx=ctx, model="m", messages=(Message("user", prompt(i)),))
        t0 = time.perf_counter()
        verdict = guard.screen_input(request)
        whole.append(time.perf_counter() - t0)
        assert verdict.allowed, verdict
        text = prompt(i)
        t0 = time.perf_counter()
        guard.pii.validate(text, {"policy": {}})
        direct.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        composed.validate(text, metadata={"policy": {}})
        guarded.append(time.perf_counter() - t0)
    result = {"input_guard_ms": latency_summary(whole), "pii_validator_direct_ms": latency_summary(direct),
              "pii_validator_through_Guard_ms": latency_summary(guarded)}
    added = result["pii_validator_through_Guard_ms"]["p50"] - result["pii_validator_direct_ms"]["p50"]
    print(json.dumps(result, indent=2))
    print(f"Guard adds {added:.2f} ms p50 per validator call")
    ok50, ok99 = result["input_guard_ms"]["p50"] <= 15, result["input_guard_ms"]["p99"] <= 40
    print(f"target input guard p50 <= 15 ms: {'MET' if ok50 else 'NOT MET'}; p99 <= 40 ms: {'MET' if ok99 else 'NOT MET'}")


if __name__ == "__main__":
    main()
