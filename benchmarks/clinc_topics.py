"""Build the topic-hardening measurement from CLINC150: a topics config that allows three
CLINC domains (examples from the train split) and a JSON Lines test file (the test split:
those domains' rows in scope; every other domain's rows and the out-of-scope rows out).

    .venv/bin/python benchmarks/clinc_topics.py --data CLINC_FOLDER --out /tmp/clinc
    .venv/bin/embassy eval guard --task topic --topics /tmp/clinc/topics.yaml \
        --data /tmp/clinc/test.jsonl --json

The threshold is chosen on the val split (the least that keeps 97 % of in-scope val rows: a margin for the 95 % target),
never on the test split that is reported.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import defaultdict
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from embassy.embeddings import shared_embedder  # noqa: E402
from deployments.guardrail.topic import TopicModel  # noqa: E402

ALLOWED = ("banking", "credit_cards", "travel")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True,
                        help="folder with CLINC150's clinc_data_full.json and clinc_domains.json (clinc/oos-eval)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--per-intent", type=int, default=20, help="train examples per intent")
    args = parser.parse_args()
    data = json.loads((args.data / "clinc_data_full.json").read_text())
    domain_of = {intent: domain for domain, intents in json.loads((args.data / "clinc_domains.json").read_text()).items()
                 for intent in intents}
    rng = random.Random(0)
    by_intent = defaultdict(list)
    for text, intent in data["train"]:
        by_intent[intent].append(text)
    allowed: dict[str, list[str]] = defaultdict(list)
    for intent, texts in sorted(by_intent.items()):
        if domain_of.get(intent) in ALLOWED:
            allowed[domain_of[intent]] += rng.sample(texts, min(args.per_intent, len(texts)))

    # Threshold on val: keep 97 % of in-scope val rows.
    embed = shared_embedder().embed
    model = TopicModel(dict(allowed), {}, embed, threshold=0.0)
    val_in = [t for t, i in data["val"] if domain_of.get(i) in ALLOWED]
    scores = sorted(model.check(v).score for v in embed(val_in))
    threshold = float(scores[int(0.03 * len(scores))])

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "topics.yaml").write_text(yaml.safe_dump(
        {"threshold": round(threshold, 4), "k": 3, "allowed": dict(allowed), "denied": {}}, allow_unicode=True))
    with open(args.out / "test.jsonl", "w") as f:
        for text, intent in data["test"]:
            label = "in_scope" if domain_of.get(intent) in ALLOWED else "out_of_scope"
            f.write(json.dumps({"text": text, "label": label}) + "\n")
        for text, _ in data["oos_test"]:
            f.write(json.dumps({"text": text, "label": "out_of_scope"}) + "\n")
    print(f"allowed {ALLOWED}, {sum(map(len, allowed.values()))} examples, threshold {threshold:.4f} "
          f"(val) -> {args.out}")


if __name__ == "__main__":
    main()
