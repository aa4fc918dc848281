"""Slots of a customs question, compared exactly before a candidate hit is judged.

Customs questions are short frames around a few values that decide the answer: which way
the goods go, which countries (and which is the origin), which HS code or quantity, which
Incoterm and edition, which cost item, with or without a negation, before or after an
event. Two wordings of one question ("Exporting from South Korea: what documents are
required?" / "For an export shipment leaving South Korea, which documents must I
prepare?") share those values and little else; a near-miss shares everything but one of
them. So for two customs questions the cache compares the values (this module) and lets
the pair classifier judge only the rest, at a threshold calibrated on customs pairs
(verifier.py).

These are rules, not a model, because each slot is a closed vocabulary (directions,
countries, Incoterms, cost items) or a pattern (codes, numbers), and a wrong answer served
from the cache is worse than a miss: a value read one way in one text and another way in
the other vetoes the hit. Products are an open vocabulary: in one wording a swapped word
is a value and vetoes; across two wordings they are left to the classifier, which scores a
product swap low (median 0.01 on the customs train pairs). The subject must be named alike
on both sides, which loses some wordings ("below what value are parcels free of duty" for
"de minimis") to keep a near-miss ("duty on X" / "preferential duty on X") from a hit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from deployments.cache.mismatch import _NUMBER, _number
from deployments.guardrail.trade_terms import INCOTERMS, PLACES

_I = re.IGNORECASE
# Words that make a question a customs question; without one on both sides the general
# path (mismatch.py and the general threshold) applies. Strong cues only: on the QQP pairs,
# words such as "origin", "shipment" or "permit" mostly mark other questions.
CUSTOMS_CUES = re.compile(
    r"\b(customs|imports?|importing|imported|importer|exports?|exporting|exported|exporter|re-export\w*|"
    r"duty|duties|duty-free|tariffs?|HS|HTS|CN code|TARIC|incoterms?|" + "|".join(sorted(INCOTERMS)) + r"|"
    r"declare|declaring|declaration|certificates? of origin|preferential|anti-dumping|countervailing|"
    r"de minimis|bonded|ECCN|dual-use|carnets?|EORI|travell?ers?|passengers?)\b"
    r"|\b\d{4}\.\d{2}", re.IGNORECASE)  # or an HS code

_IMPORT = re.compile(r"\b(imports?|importing|imported|importer|bring\w*\s+(?:\w+\s+){0,3}into|entering|arriving|"
                     r"arrives?|inbound|entry)\b", _I)
_EXPORT = re.compile(r"\b(exports?|exporting|exported|exporter|leaving|outbound|out of|re-export\w*)\b", _I)
_INCOTERM_NAMES = {"ex works": "EXW", "free carrier": "FCA", "free alongside ship": "FAS", "free on board": "FOB",
                   "cost and freight": "CFR", "cost insurance and freight": "CIF", "carriage paid to": "CPT",
                   "carriage and insurance paid to": "CIP", "delivered at place unloaded": "DPU",
                   "delivered at place": "DAP", "delivered duty paid": "DDP"}
_INCOTERM = re.compile(r"\b(" + "|".join(sorted(INCOTERMS)) + r")\b|\b(" +
                       "|".join(sorted(_INCOTERM_NAMES, key=len, reverse=True)).replace(" ", r",?\s+") + r")\b", _I)
# Cost items whose allocation or inclusion a question asks about, in one comparable form.
_COSTS = {"freight": "freight", "carriage": "freight", "transport costs?": "freight", "shipping costs?": "freight",
          "insurance": "insurance", "unloading": "unloading", "loading": "loading",
          "terminal handling": "terminal handling", "thc": "terminal handling", "handling": "handling",
          "export clearance": "export clearance", "import clearance": "import clearance",
          "import dut(?:y|ies)": "import duties", "export dut(?:y|ies)": "export duties",
          "import vat": "import vat", "storage": "storage", "demurrage": "demurrage", "detention": "detention",
          "brokerage": "brokerage", "commissions?": "commission", "royalt(?:y|ies)": "royalties",
          "packing costs?": "packing", "inspection fees?": "inspection"}
_COST = re.compile(r"\b(" + "|".join(sorted(_COSTS, key=len, reverse=True)) + r")\b", _I)
# What a question asks about: the document, measure, code or procedure, under one name per
# concept whatever the wording ("tariff code" = "HS code", "customs warehouse" = "bonded").
_SUBJECTS = {
    "hs code": r"hs codes?|hts|cn codes?|tariff (?:codes?|headings?|numbers?)|commodity codes?|subheadings?|"
               r"headings?|harmoni[sz]ed system|nomenclature|tariff classification|\bhs\b",
    "eccn": r"eccns?|export control classification(?: numbers?)?|dual-use",
    "export licence": r"export licen[cs]es?|export permits?",
    "import licence": r"import licen[cs]es?|import permits?",
    "permit": r"(?<!export )(?<!import )permits?",
    "certificate of origin": r"certificates? of origin|origin certificates?|eur\.?1|form a",
    "statement on origin": r"statements? on origin|rex",
    "preference": r"preferential|(?:free )?trade agreements?|fta|gsp|reduced (?:duty|tariff)",
    "anti-dumping": r"anti-dumping|countervailing|safeguard dut(?:y|ies)",
    "vat": r"vat|value added tax|gst",
    "excise": r"excise",
    "bonded warehouse": r"bonded(?: warehouses?)?|customs warehouses?|in bond",
    "de minimis": r"de minimis|low-value|duty-free threshold",
    "allowance": r"allowances?|duty-free limits?|personal exemptions?",
    "cash": r"cash|currency",
    "customs value": r"customs value|dutiable value|transaction value",
    "risk": r"risk",
    "carnet": r"carnets?",
    "sanctions": r"sanctions?|embargo(?:es)?",
    "quota": r"quotas?",
    "drawback": r"drawback|duty refund|refund of duty",
    "documents": r"documents|paperwork",
}
_HS_NUMBER = re.compile(r"\b\d{4}\.\d{2}")
_SUBJECT = [(name, re.compile(r"\b(?:" + pattern + r")\b", _I)) for name, pattern in _SUBJECTS.items()]
_PLACE = re.compile(r"\b(" + "|".join(re.escape(p) for p in sorted(PLACES, key=len, reverse=True)) + r")\b")
_ORIGIN_BEFORE = re.compile(r"\b(from|out of|leaving|of|made in|produced in|originating in|manufactured in)\s+$", _I)
_DESTINATION_BEFORE = re.compile(r"\b(to|into|entering|arriving in|arrive in|for|reaching|enter)\s+$", _I)
_LOCATION_BEFORE = re.compile(r"\b(in|at|within|inside)\s+$", _I)
_ORIGIN_AFTER = re.compile(r"^\s+(origin|made|produced|originating)\b", _I)
_NEGATION = re.compile(r"\b(not|no|never|without|cannot|can't|don't|doesn't|isn't|aren't|won't|nor|none)\b|n't\b", _I)
# Set phrases whose negation word does not negate the question.
_NOT_A_NEGATION = re.compile(r"\bwithout (?:paying|any) (?:duty|duties|tax|vat)\b|\bfree of (?:duty|tax)\b|"
                             r"\bor not\b|\bwhether or not\b|\bno matter\b", _I)
_BEFORE = re.compile(r"\b(before|prior to|ahead of|in advance of|pre-arrival|pre-shipment)\b", _I)
_AFTER = re.compile(r"\b(after|once|following|post-arrival|post-clearance|upon arrival|on arrival)\b", _I)
# Aliases to one comparable name; the rest come from Faker's country list.
_COUNTRY_ALIASES = {"us": "united states", "u.s.": "united states", "usa": "united states",
                    "united states of america": "united states", "america": "united states",
                    "uk": "united kingdom", "u.k.": "united kingdom", "britain": "united kingdom",
                    "great britain": "united kingdom", "uae": "united arab emirates", "emirates": "united arab emirates",
                    "korea": "south korea", "republic of korea": "south korea", "eu": "european union",
                    "the eu": "european union", "holland": "netherlands", "the netherlands": "netherlands",
                    "viet nam": "vietnam", "türkiye": "turkey", "turkiye": "turkey", "czechia": "czech republic"}


@lru_cache(maxsize=1)
def _country_pattern() -> tuple[re.Pattern, dict[str, str]]:
    from faker.providers.address.en import Provider

    names = {c.lower(): c.lower() for c in Provider.countries}
    names.update({"south korea": "south korea", "north korea": "north korea", "vietnam": "vietnam",
                  "european union": "european union", "czech republic": "czech republic"})
    names.update(_COUNTRY_ALIASES)
    alternatives = sorted((re.escape(n) for n in names), key=len, reverse=True)
    return re.compile(r"(?<![\w.])(" + "|".join(alternatives) + r")(?![\w])", _I), names


@dataclass(frozen=True)
class CustomsSlots:
    directions: frozenset[str]
    countries: frozenset[str]
    origins: frozenset[str]
    destinations: frozenset[str]
    numbers: frozenset[str]
    incoterms: frozenset[str]
    costs: frozenset[str]
    negated: bool
    timing: frozenset[str]  # before / after
    subjects: frozenset[str]
    places: frozenset[str]  # ports, airports, trade hubs


def is_customs(text: str) -> bool:
    return CUSTOMS_CUES.search(text) is not None


def customs_slots(text: str) -> CustomsSlots | None:
    """The slots of a customs question; None when the text has no customs cue."""
    if not CUSTOMS_CUES.search(text):
        return None
    directions = frozenset({"import"} if _IMPORT.search(text) else set()) | \
        frozenset({"export"} if _EXPORT.search(text) else set())
    pattern, names = _country_pattern()
    countries, origins, destinations, located = set(), set(), set(), set()
    for m in pattern.finditer(text):
        name = names[m.group(1).lower()]
        countries.add(name)
        before, after = text[:m.start()].removesuffix("the "), text[m.end():]
        if _ORIGIN_BEFORE.search(before) or _ORIGIN_AFTER.search(after):
            origins.add(name)
        elif _DESTINATION_BEFORE.search(before):
            destinations.add(name)
        elif _LOCATION_BEFORE.search(before):
            located.add(name)
    # A country the goods are "in": where they leave from on an export, arrive in on an import.
    if directions == {"export"}:
        origins |= located
    elif directions == {"import"}:
        destinations |= located
    incoterms = frozenset((m.group(1) or "").upper() or _INCOTERM_NAMES[re.sub(r",?\s+", " ", m.group(2).lower())]
                          for m in _INCOTERM.finditer(text))
    costs = frozenset(_COSTS[next(k for k in _COSTS if re.fullmatch(k, m.group(1), _I))] for m in _COST.finditer(text))
    numbers = frozenset(_number(d, k) for d, k in _NUMBER.findall(text))
    plain = _NOT_A_NEGATION.sub(" ", text)
    timing = frozenset({"before"} if _BEFORE.search(text) else set()) | \
        frozenset({"after"} if _AFTER.search(text) else set())
    subjects = frozenset(name for name, pattern in _SUBJECT if pattern.search(text)) | \
        frozenset({"hs code"} if _HS_NUMBER.search(text) else set())  # "what is in 8471.30" asks about a code
    return CustomsSlots(directions, frozenset(countries), frozenset(origins), frozenset(destinations), numbers,
                        incoterms, costs, bool(_NEGATION.search(plain)), timing, subjects,
                        frozenset(_PLACE.findall(text)))


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


_FUNCTION = frozenset("a an the of for to in into from on at by with is are do does did can could may must should "
                      "will would i we my our you your what which who how when where why there it its this that "
                      "be been any or and".split())


def swapped_in_one_wording(a: str, b: str) -> bool:
    """The same wording with a word each side lacks ("... for cotton T-shirts?" / "... for
    car tyres?"): in a customs question that word is a value (here a product), not style."""
    wa, wb = _words(a) - _FUNCTION, _words(b) - _FUNCTION
    return same_frame(a, b) and bool(wa - wb) and bool(wb - wa)


def same_frame(a: str, b: str) -> bool:
    """Most words shared: the two texts are one wording, not two."""
    wa, wb = _words(a), _words(b)
    return len(wa & wb) >= 0.7 * max(len(wa | wb), 1)


def slot_difference(a: str, b: str) -> str | None:
    """Which slot two customs questions fill differently; None when they agree (or one is
    not a customs question: then the general rules apply)."""
    sa, sb = customs_slots(a), customs_slots(b)
    if sa is None or sb is None:
        return None
    if sa.directions and sb.directions and sa.directions != sb.directions:
        return "direction differs (import/export)"
    if sa.countries != sb.countries:
        return "countries differ"
    if (sa.origins & sb.destinations) or (sa.destinations & sb.origins):
        return "origin and destination swapped"
    if sa.places != sb.places:
        return "ports or places differ"
    if sa.numbers != sb.numbers:
        return "numbers or codes differ"
    if sa.incoterms != sb.incoterms:
        return "Incoterms differ"
    if sa.costs and sb.costs and sa.costs != sb.costs:
        return "cost items differ"
    if sa.subjects != sb.subjects:
        return "subjects differ"
    if sa.negated != sb.negated:
        return "negation differs"
    # Before/after is a slot when both name one, or when the rest is one wording ("before
    # the goods arrive" / "once they are released" are two questions; "ahead of arrival"
    # and no timing word may be one).
    if sa.timing != sb.timing and (sa.timing and sb.timing or same_frame(a, b)):
        return "before/after differs"
    if swapped_in_one_wording(a, b):
        return "a value differs in one wording"
    return None
