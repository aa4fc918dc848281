"""Build the groundedness set (tests/data/customs_corpus/groundedness.jsonl) from the
retriever's test corpus: for each of the 38 questions, the answering chunk and its
neighbour as context, and answers that are supported (a hand-written paraphrase, and the
corpus sentence itself) or deliberately corrupted (a changed number, a swapped place,
an invented requirement). Deterministic: run it again after editing the corpus.

    .venv/bin/python benchmarks/build_groundedness_set.py
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from deployments.retriever.chunking import split  # noqa: E402
from deployments.retriever.evaluation import _fold  # noqa: E402
from deployments.retriever.loaders import load  # noqa: E402

CORPUS = Path(__file__).resolve().parent.parent / "tests" / "data" / "customs_corpus"
SWAPS = {"Germany": "Austria", "German": "Austrian", "France": "Belgium", "French": "Belgian", "Hamburg": "Bremen",
         "Le Havre": "Marseille", "Rotterdam": "Antwerp", "Dutch": "Danish", "EU": "EFTA", "US": "Canadian",
         "United States": "Canada", "India": "Pakistan", "Indian": "Pakistani", "Mumbai": "Karachi",
         "Singapore": "Malaysia", "UAE": "Oman", "Dubai": "Muscat", "Jebel Ali": "Sohar", "GB": "IE",
         "UK": "Irish", "CBP": "CBSA", "ICEGATE": "WeBOC", "DELTA G": "PLDA", "ATLAS": "EMCS", "Mirsal 2": "Bayan",
         "Thursday": "Monday", "DPU": "DAP", "CIP": "CIF", "FCA": "FAS", "Harmonized System": "Combined Nomenclature"}
WORD_NUMBERS = {"two": "three", "five": "six", "twelve": "ten", "one": "two"}


def change_number(text: str) -> str | None:
    m = re.search(r"\d[\d,]*", text)
    if m:
        digits = m.group(0).replace(",", "")
        new = str(int(digits) * 2 + 1) if digits != "0" else "7"
        return text[:m.start()] + new + text[m.end():]
    for word, other in WORD_NUMBERS.items():
        if re.search(rf"\b{word}\b", text):
            return re.sub(rf"\b{word}\b", other, text, count=1)
    return None


def swap_place(text: str) -> str | None:
    for name, other in sorted(SWAPS.items(), key=lambda kv: -len(kv[0])):
        if re.search(rf"\b{re.escape(name)}\b", text):
            return re.sub(rf"\b{re.escape(name)}\b", other, text)
    return None


def evidence_sentence(chunk: str, evidence: str) -> str:
    flat = re.sub(r"\s+", " ", chunk.split("\n", 1)[-1])
    for s in re.split(r"(?<=[.!?])\s+", flat):
        if _fold(evidence) in _fold(s):
            return s.strip()
    raise ValueError(f"evidence {evidence!r} not in one sentence")


def main() -> None:
    questions = [json.loads(line) for line in (CORPUS / "questions.jsonl").read_text().splitlines()]
    answers = {a["q"]: a for a in map(json.loads, (CORPUS / "answers.jsonl").read_text().splitlines())}
    rows = []
    for i, q in enumerate(questions, 1):
        chunks = [c.text for c in split(load(CORPUS / "docs" / q["source"]), 200, 40)]
        at = next(j for j, c in enumerate(chunks) if _fold(q["evidence"]) in _fold(c))
        context = [chunks[at]] + ([chunks[at + 1]] if at + 1 < len(chunks) else chunks[max(0, at - 1):at])
        paraphrase, quoted = answers[i]["answer"], evidence_sentence(chunks[at], q["evidence"])

        def row(answer: str, label: int, kind: str) -> None:
            rows.append({"question": q["question"], "context": context, "answer": answer, "label": label,
                         "kind": kind, "q": i})
        row(paraphrase, 1, "supported_paraphrase")
        row(quoted, 1, "supported_quote")
        row(f"{paraphrase} {answers[i]['invented']}", 0, "invented_requirement")
        for base, name in ((paraphrase, "paraphrase"), (quoted, "quote")):
            for kind, corrupt in (("changed_number", change_number), ("swapped_place", swap_place)):
                bad = corrupt(base)
                if bad is not None and bad != base:
                    row(bad, 0, f"{kind}_{name}")
    out = CORPUS / "groundedness.jsonl"
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    kinds: dict[str, int] = {}
    for r in rows:
        kinds[r["kind"]] = kinds.get(r["kind"], 0) + 1
    print(f"{len(rows)} rows -> {out}: {kinds}")


if __name__ == "__main__":
    main()
