"""Build the customs-domain cache development set (tests/data/customs_dev/cache_*.jsonl).

Question pairs in the format of `embassy eval cache` (`{"text_a", "text_b", "label"}`, 1 =
the stored answer may be served for the new question), with `kind` saying how the pair was
made:

- `paraphrase` (label 1): one intent with the same slots, asked in two of its wordings
  ("Exporting from South Korea: what documents are required?" / "For an export shipment
  leaving South Korea, which documents must I prepare?");
- `slot:<name>` (label 0): the same intent, in the same or another wording, with one slot
  filled another way: direction (import/export), from/to swapped, a country, an HS code, a
  number, a year or Incoterms edition, an Incoterm, a product, a cost item, negation,
  before/after;
- `intent` (label 0): another intent with the same slots ("which documents to export from
  Korea" / "how long export clearance takes in Korea").

Written for Embassy from templates and seeded fillers; deterministic. The split is by
intent: every intent's pairs go to one split, so the test part asks questions of kinds
that neither fitting nor calibration saw.

    .venv/bin/python benchmarks/build_customs_cache_set.py
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.dev_sets import split, write  # noqa: E402

COUNTRIES = ["South Korea", "Germany", "India", "Singapore", "the UAE", "Japan", "Brazil", "Vietnam", "Mexico",
             "Turkey", "Canada", "the UK", "France", "Australia", "Saudi Arabia", "Indonesia", "Egypt", "Chile"]
PRODUCTS = ["e-bikes", "drones", "lithium-ion batteries", "cotton T-shirts", "olive oil", "frozen shrimp",
            "solar panels", "laptops", "ceramic tiles", "steel bolts", "LED lamps", "car tyres", "coffee beans",
            "surgical gloves", "wooden chairs", "power banks", "copper wire", "wine", "perfume", "toys"]
HS = ["8711.60", "8711.90", "8806.22", "8507.60", "6109.10", "6109.90", "1509.20", "0306.17", "8541.43",
      "8471.30", "6907.21", "7318.15", "8539.52", "4011.10", "0901.21", "4015.12", "9401.61", "8504.40"]
INCOTERMS = ["EXW", "FCA", "FOB", "CFR", "CIF", "CPT", "CIP", "DAP", "DPU", "DDP"]
YEARS = ["2010", "2020"]
COSTS = ["freight", "insurance", "unloading charges", "export clearance", "import duties", "terminal handling charges"]
NUMBERS = ["500", "1,000", "2,500", "10,000", "150", "800"]

# Each intent: its wordings, every one naming the same slots. {dir} is a direction slot,
# written through DIRECTION's forms.
DIRECTION = {"import": {"verb": "import", "ing": "importing", "noun": "an import", "into_from": "into",
                        "ship": "an import shipment arriving in", "dec": "import declaration"},
             "export": {"verb": "export", "ing": "exporting", "noun": "an export", "into_from": "from",
                        "ship": "an export shipment leaving", "dec": "export declaration"}}
INTENTS: dict[str, list[str]] = {
    "documents": ["{ing_cap} {into_from} {c}: what documents are required?",
                  "For {ship} {c}, which documents must I prepare?",
                  "Which documents are needed when {ing} goods {into_from} {c}?",
                  "What paperwork do I need to {verb} goods {into_from} {c}?"],
    "clearance_time": ["How long does {verb} clearance take in {c}?",
                       "How many days should I allow for {verb} customs clearance in {c}?",
                       "What is the usual time for {ing} goods through customs in {c}?"],
    "duty_rate": ["What is the import duty on {p} from {c} into {c2}?",
                  "How much duty is charged on {p} shipped from {c} to {c2}?",
                  "Which duty rate applies when {p} from {c} are imported into {c2}?",
                  "If I bring {p} from {c} into {c2}, what customs duty do I pay?"],
    "hs_code": ["What is the HS code for {p}?", "Which HS code should I use for {p}?",
                "How are {p} classified in the Harmonized System?", "Under which tariff code do {p} fall?"],
    "hs_meaning": ["What does HS code {hs} cover?", "Which goods fall under HS {hs}?",
                   "What products are classified under subheading {hs}?", "Explain what is included in {hs}."],
    "incoterm_cost": ["Under {inc} (Incoterms {year}), who pays the {cost}?",
                      "With {inc} in the Incoterms {year} rules, does the buyer or the seller bear the {cost}?",
                      "Who is responsible for the {cost} when goods are sold {inc}, Incoterms {year}?"],
    "customs_value": ["Is the {cost} included in the customs value of goods imported into {c}?",
                      "Does the customs value in {c} include the {cost}?",
                      "When declaring imports to {c}, must I add the {cost} to the customs value?"],
    "export_licence": ["Do I need an export licence to ship {p} to {c}?",
                       "Is an export licence required for sending {p} to {c}?",
                       "Must I apply for an export licence before exporting {p} to {c}?"],
    "origin_cert": ["Is a certificate of origin required for {p} exported to {c}?",
                    "Do {p} shipped to {c} need a certificate of origin?",
                    "Will customs in {c} ask for a certificate of origin for {p}?"],
    "preference": ["Do {p} made in {c} qualify for preferential duty in {c2}?",
                   "Can {p} produced in {c} get a preferential tariff rate when imported into {c2}?",
                   "Is there a reduced duty under a trade agreement for {p} of {c} origin entering {c2}?"],
    "allowance": ["What is the duty-free allowance for travellers arriving in {c}?",
                  "How much can a traveller bring into {c} without paying duty?",
                  "What are the duty-free limits for passengers entering {c}?"],
    "cash": ["How much cash can I carry into {c} without declaring it?",
             "What is the limit for bringing cash into {c} before a declaration is needed?",
             "Above what amount must I declare cash when I enter {c}?"],
    "declaration_timing": ["Can I file the {dec} {when} the goods arrive in {c}?",
                           "Is it possible to lodge the {dec} in {c} {when} the goods arrive?",
                           "In {c}, may the {dec} be submitted {when} the goods arrive?"],
    "licence_free": ["Which goods can be imported into {c} {neg} an import licence?",
                     "What products may I bring into {c} {neg} an import licence?",
                     "List the goods that can enter {c} {neg} an import licence."],
    "quantity": ["Do I need a permit to import more than {n} kg of {p} into {c}?",
                 "Is a permit required when importing over {n} kg of {p} to {c}?",
                 "Above {n} kg, must imports of {p} into {c} have a permit?"],
    "vat": ["What VAT rate applies to imports of {p} into {c}?", "How much import VAT is due on {p} entering {c}?",
            "At what rate is VAT charged when {p} are imported into {c}?"],
    "anti_dumping": ["Is there anti-dumping duty on {p} from {c}?",
                     "Do {p} originating in {c} face anti-dumping duties?",
                     "Are anti-dumping measures in force against {p} from {c}?"],
    "de_minimis": ["What is the de minimis value for {verb} consignments in {c}?",
                   "Below what value are {verb} parcels in {c} free of duty?",
                   "What is the duty-free threshold for low-value {verb} shipments in {c}?"],
    "eccn": ["What is the ECCN for {p}?", "Which export control classification number applies to {p}?",
             "How do I find the ECCN of {p}?"],
    "bonded": ["Can I store {p} in a bonded warehouse in {c} before paying duty?",
               "Is it allowed to keep {p} in a customs warehouse in {c} with duty suspended?",
               "May {p} wait in bond in {c} before the import duty is paid?"],
    "hs_change": ["Did the HS {year} edition change the code for {p}?",
                  "Was the classification of {p} changed in the {year} Harmonized System?",
                  "Is the HS code for {p} different in the {year} version of the nomenclature?"],
    "incoterm_risk": ["When does risk pass from seller to buyer under {inc} (Incoterms {year})?",
                      "Under Incoterms {year} {inc}, at what point is the risk transferred to the buyer?",
                      "With {inc} according to Incoterms {year}, where does the buyer take over the risk?"],
}
# The slots each intent names; a `slot:` negative changes one of them.
SLOTS = {"documents": ("dir", "c"), "clearance_time": ("dir", "c"), "duty_rate": ("p", "c", "c2", "from_to"),
         "hs_code": ("p",), "hs_meaning": ("hs",), "incoterm_cost": ("inc", "year", "cost"),
         "customs_value": ("cost", "c"), "export_licence": ("p", "c"), "origin_cert": ("p", "c"),
         "preference": ("p", "c", "c2", "from_to"), "allowance": ("c",), "cash": ("c",),
         "declaration_timing": ("dir", "c", "when"), "licence_free": ("c", "neg"), "quantity": ("n", "p", "c"),
         "vat": ("p", "c"), "anti_dumping": ("p", "c"), "de_minimis": ("dir", "c"), "eccn": ("p",),
         "bonded": ("p", "c"), "hs_change": ("year", "p"), "incoterm_risk": ("inc", "year")}
HS_YEARS = ["2017", "2022"]


def _draw(rng: random.Random) -> dict[str, str]:
    c, c2 = rng.sample(COUNTRIES, 2)
    return {"dir": rng.choice(["import", "export"]), "c": c, "c2": c2, "p": rng.choice(PRODUCTS),
            "hs": rng.choice(HS), "inc": rng.choice(INCOTERMS), "year": rng.choice(YEARS),
            "cost": rng.choice(COSTS), "n": rng.choice(NUMBERS), "when": rng.choice(["before", "after"]),
            "neg": rng.choice(["without", "with"])}


def _changed(slots: dict[str, str], name: str, rng: random.Random, intent: str) -> dict[str, str]:
    """The same slots with `name` filled another way."""
    out = dict(slots)
    if name == "from_to":
        out["c"], out["c2"] = slots["c2"], slots["c"]
        return out
    if name == "year" and intent == "hs_change":
        out["year"] = next(y for y in HS_YEARS if y != slots["year"])
        return out
    flip = {"dir": {"import": "export", "export": "import"}, "when": {"before": "after", "after": "before"},
            "neg": {"without": "with", "with": "without"}}
    if name in flip:
        out[name] = flip[name][slots[name]]
        return out
    pool = {"c": COUNTRIES, "c2": COUNTRIES, "p": PRODUCTS, "hs": HS, "inc": INCOTERMS, "year": YEARS,
            "cost": COSTS, "n": NUMBERS}[name]
    out[name] = rng.choice([v for v in pool if v not in (slots[name], slots.get("c"), slots.get("c2"))])
    return out


def render(template: str, slots: dict[str, str], intent: str = "") -> str:
    d = DIRECTION[slots["dir"]]
    year = slots["year"] if intent != "hs_change" else slots["year"]
    text = template.format(c=slots["c"], c2=slots["c2"], p=slots["p"], hs=slots["hs"], inc=slots["inc"], year=year,
                           cost=slots["cost"], n=slots["n"], when=slots["when"], neg=slots["neg"],
                           ing_cap=d["ing"].capitalize(), **d)
    return text[0].upper() + text[1:]


def _pairs(intent: str, rng: random.Random, n_groups: int) -> list[dict]:
    templates, names = INTENTS[intent], SLOTS[intent]
    rows = []
    for _ in range(n_groups):
        slots = _draw(rng)
        if intent == "hs_change":
            slots["year"] = rng.choice(HS_YEARS)
        a, b = rng.sample(range(len(templates)), 2)
        rows.append({"text_a": render(templates[a], slots, intent), "text_b": render(templates[b], slots, intent),
                     "label": 1, "kind": "paraphrase", "intent": intent})
        name = rng.choice(names)
        other = _changed(slots, name, rng, intent)
        # Half in the same wording (the hardest case for an embedding), half in another.
        c = a if rng.random() < 0.5 else b
        rows.append({"text_a": render(templates[a], slots, intent), "text_b": render(templates[c], other, intent),
                     "label": 0, "kind": f"slot:{name}", "intent": intent})
        # Another intent that shares these slots' kinds.
        sharing = [i for i in INTENTS if i != intent and set(SLOTS[i]) & set(names) and
                   set(SLOTS[i]) <= set(names) | {"dir"}]
        if sharing:
            j = rng.choice(sharing)
            rows.append({"text_a": render(templates[a], slots, intent),
                         "text_b": render(rng.choice(INTENTS[j]), slots, j),
                         "label": 0, "kind": "intent", "intent": intent})
    return rows


def build(seed: int = 16) -> dict[str, list[dict]]:
    rng = random.Random(seed)
    intents = [{"intent": i} for i in INTENTS]
    parts = {name: [r["intent"] for r in rows] for name, rows in split(intents, rng).items()}
    out = {}
    for name, chosen in parts.items():
        rows = [row for intent in chosen for row in _pairs(intent, rng, 14)]
        unique = list({(r["text_a"], r["text_b"]): r for r in rows if r["text_a"] != r["text_b"]}.values())
        rng.shuffle(unique)
        out[name] = unique
    return out


def main() -> None:
    splits = build()
    write("cache", splits)
    for name, rows in splits.items():
        kinds = {}
        for r in rows:
            kinds[r["kind"].split(":")[0]] = kinds.get(r["kind"].split(":")[0], 0) + 1
        print(f"{name}: {len(rows)} pairs, {sum(r['label'] for r in rows)} paraphrases, {kinds}, "
              f"intents {sorted({r['intent'] for r in rows})}")


if __name__ == "__main__":
    main()
