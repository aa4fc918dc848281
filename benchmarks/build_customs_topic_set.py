"""Build the customs-domain topic development set (tests/data/customs_dev/topic_*.jsonl).

In scope: customs, trade compliance, logistics and the documents around them, including
travellers' customs questions, export controls, classification of any product and rules
of origin, asked the many ways users ask. Out of scope: requests a customs assistant
should not serve, including near-misses that share words with the domain (booking a
holiday, a recipe with "import" in it, a bank transfer). Written for Embassy from
templates and seeded fillers; deterministic.

    .venv/bin/python benchmarks/build_customs_topic_set.py
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.dev_sets import split, write  # noqa: E402


PRODUCTS = ["electric bicycles", "e-bikes", "drones", "a digital camera", "lithium-ion batteries", "cotton T-shirts",
            "running shoes", "olive oil", "frozen shrimp", "basmati rice", "solar panels", "laptops", "smartphones",
            "wooden furniture", "ceramic tiles", "steel bolts", "LED lamps", "perfume", "wine", "whisky",
            "cigarettes", "coffee beans", "tea", "honey", "medical masks", "surgical gloves", "toys",
            "bicycle helmets", "car tyres", "spare parts for pumps", "printed books", "jewellery", "watches",
            "handbags of leather", "carpets", "garden furniture", "3D printers", "electric scooters",
            "a used car", "machine tools", "power transformers", "semiconductors", "industrial robots",
            "fertiliser", "plastic granules", "polyester yarn", "paper pulp", "aluminium sheets", "copper wire"]
COUNTRIES = ["the EU", "Germany", "France", "the US", "India", "Singapore", "the UAE", "the UK", "China",
             "Japan", "Brazil", "South Korea", "Vietnam", "Turkey", "Mexico", "Canada", "Australia", "Switzerland"]
IN_SCOPE = [
    "What is the HS code for {p}?", "How do I classify {p} in the tariff?", "Which tariff heading covers {p}?",
    "Are {p} classified under {hs}?", "Do {p} fall under heading {hs} or somewhere else?",
    "What import duty applies to {p} from {c}?", "Which documents do I need to export {p} to {c}?",
    "Can I bring {p} back from {c} in my luggage without paying duty?",
    "What is the duty-free allowance for travellers arriving in {c}?",
    "How much cash can I carry when I fly into {c} before I must declare it?",
    "Do I need an ATA carnet to take {p} to a trade fair in {c}?", "How does an ATA carnet work?",
    "Who can issue a REX statement on origin?", "What must a statement on origin under REX say?",
    "What is the ECCN of {p}?", "Do {p} need an export licence under dual-use rules?",
    "Is {p} on the export control list for shipments to {c}?",
    "Do {p} made in {c} qualify for preferential origin?", "What are the rules of origin for {p}?",
    "How do I prove the origin of {p} for a free trade agreement?",
    "Which Incoterm should I use for shipping {p} to {c} by sea?", "Who pays freight for {p} sold DAP {c}?",
    "How long does customs clearance of {p} take in {c}?", "How do I track a container of {p} held at customs?",
    "Can I store {p} in a bonded warehouse before paying duty?", "What is inward processing relief for {p}?",
    "My shipment of {p} was stopped by customs in {c}; what do I do?",
    "What does a freight forwarder need from me to ship {p} to {c}?",
    "How do I fill the commercial invoice for {p}?", "What goes on a packing list for {p}?",
    "Is a certificate of origin required for {p} exported to {c}?", "What is an EORI number and do I need one?",
    "How is anti-dumping duty applied to {p} from {c}?", "Can I get duty back on {p} that I re-export?",
    "Which licences are needed to import {p} into {c}?", "What is the VAT on imports of {p} into {c}?",
    "Can I override a suggested HS code for {p}?", "Are sanctions a problem for shipping {p} to {c}?",
]
HS = ["8711.60", "8525.89", "8507.60", "6109.10", "6404.11", "1509.20", "0306.17", "8541.43", "8471.30", "9403.60"]
OUT_OF_SCOPE = [
    "Book me a hotel in {city} for next weekend.", "What is a good recipe for {dish}?",
    "Who won the {sport} match last night?", "Write a poem about {thing}.", "Tell me a joke about {thing}.",
    "How do I fix a Python error in my web app?", "What medicine helps with a sore throat?",
    "Who should I vote for in the election?", "Recommend a film to watch tonight.",
    "How do I transfer money to my friend's bank account?", "What is my credit card's interest rate?",
    "Plan a sightseeing trip to {city} for three days.", "What is the weather in {city} tomorrow?",
    "How do I import photos from my phone to my laptop?", "How do I import a CSV file into Excel?",
    "What are the best exercises to lose weight?", "Translate 'good morning' into Italian.",
    "Help me write a birthday message for my mother.", "What is the capital of {country}?",
    "Explain how black holes form.", "How do I train my puppy to sit?", "What stocks should I buy this year?",
    "Give me a workout plan for {sport}.", "How do I bake bread without yeast?",
    "What time does the supermarket close?", "How do I reset my router password?",
    "Summarise the plot of a famous novel.", "Which smartphone has the best camera for selfies?",
    "How do I apply for a mortgage?", "What's a good name for my cat?",
]
CITIES = ["Paris", "Rome", "Tokyo", "Dubai", "Mumbai", "New York", "Singapore", "Berlin", "Madrid", "Sydney"]
DISHES = ["lasagne", "pad thai", "biryani", "paella", "apple pie", "ramen", "chocolate cake"]
SPORTS = ["football", "cricket", "tennis", "basketball", "rugby"]
THINGS = ["the sea", "autumn", "my dog", "coffee", "the moon", "robots"]


def build(seed: int = 16) -> dict[str, list[dict]]:
    rng = random.Random(seed)
    rows = []
    for template in IN_SCOPE:
        for _ in range(8):
            rows.append({"text": template.format(p=rng.choice(PRODUCTS), c=rng.choice(COUNTRIES), hs=rng.choice(HS)),
                         "label": "in_scope"})
    for template in OUT_OF_SCOPE:
        for _ in range(5):
            rows.append({"text": template.format(city=rng.choice(CITIES), dish=rng.choice(DISHES), sport=rng.choice(SPORTS),
                                                 thing=rng.choice(THINGS), country=rng.choice(COUNTRIES).replace("the ", "")),
                         "label": "out_of_scope"})
    unique = list({r["text"]: r for r in rows}.values())
    return split(unique, rng)


def main() -> None:
    splits = build()
    write("topic", splits)
    for name, rows in splits.items():
        print(f"{name}: {len(rows)} rows, {sum(r['label'] == 'in_scope' for r in rows)} in scope")


if __name__ == "__main__":
    main()
