"""Build the customs-domain PII development set (tests/data/customs_dev/pii_*.jsonl).

Shipping and customs text as Embassy sees it: invoices, bills of lading, declarations,
travellers' questions. Every row mixes look-alikes that are NOT PII here (HS/HTS codes,
invoice, B/L, AWB and container numbers, dates, amounts, Incoterms, company, vessel and
port names, line-start words such as "Carton" or "Job") with identifiers that are, in the
formats of several jurisdictions, some of them obfuscated (a space between every digit,
dots or runs of spaces as separators, full-width digits with word joiners). Spans are
character offsets into the text as written, under Embassy's type names.

Written for Embassy from templates and seeded random fillers (no third-party text); the
check digits of cards, IBANs, Aadhaar, NRIC/FIN and Emirates IDs are computed so that the
numbers are valid. Deterministic: rerun it after editing the templates.

    .venv/bin/python benchmarks/build_customs_pii_set.py
"""

from __future__ import annotations

import random
import string
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.dev_sets import split, write  # noqa: E402
from deployments.guardrail import checksums  # noqa: E402


PORTS = ["Nhava Sheva", "Tuas", "Jebel Ali", "Port Klang", "Felixstowe", "Antwerp", "Rotterdam", "Hamburg",
         "Busan", "Laem Chabang", "Colombo", "Mundra", "Chennai", "Piraeus", "Algeciras", "Valencia", "Gdansk",
         "Jeddah", "Khalifa Port", "Salalah", "Savannah", "Long Beach", "Manzanillo", "Santos", "Durban",
         "Mombasa", "Tanjung Pelepas", "Yantian", "Ningbo", "Qingdao", "Kaohsiung", "Haiphong", "Chittagong",
         "Karachi", "Le Havre", "Genoa", "Bremerhaven", "Southampton", "Tilbury", "Pipavav", "Hazira", "Kandla"]
COMPANIES = ["Hanse Logistics GmbH", "Tuas Marine Pte Ltd", "Sheva Freight LLP", "Gulf Star Trading FZE",
             "Iberia Cargo S.L.", "Kaveri Exports Pvt Ltd", "Nordic Parts AB", "Lion City Forwarding Pte Ltd",
             "Atlas Components Inc.", "Deccan Textiles Ltd", "Rhein Maschinenbau AG", "Marina Bay Electronics",
             "Al Noor General Trading LLC", "Costa Verde Alimentos SA", "Pacific Rim Apparel Co."]
VESSELS = ["MSC Gulsun", "Ever Ace", "Maersk Elba", "CMA CGM Jacques Saade", "ONE Apus", "HMM Algeciras",
           "Cosco Shipping Aries", "Hapag Berlin Express", "MSC Anna", "Kota Megah"]
GOODS = ["electric bicycles", "cotton T-shirts", "lithium-ion batteries", "stainless steel bolts",
         "basmati rice", "LED lamps", "power transformers", "wooden furniture", "laptop computers", "olive oil",
         "ceramic tiles", "spare parts for pumps", "frozen shrimp", "polyester yarn", "digital cameras"]
HS = ["8711.60", "8504.40", "6109.10", "8507.60", "7318.15", "1006.30", "9405.42", "9403.60", "8471.30",
      "1509.20", "6907.21", "8413.91", "0306.17", "5402.33", "8525.89"]
INCOTERMS = ["FOB", "CIF", "DAP", "DDP", "EXW", "FCA", "CPT", "CIP", "DPU"]
CURRENCIES = ["USD", "EUR", "INR", "SGD", "AED", "GBP"]
MONTHS = ["Jan", "Feb", "Mar", "Apr", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
LINE_WORDS = ["Carton", "Job", "Jan", "Pallet", "Crate", "Case", "Drum", "Bale", "Lot", "Batch", "Seal",
              "Marks", "Gate", "Berth", "Dock", "Master", "Voyage", "Vessel", "Consignee", "Shipper", "Notify",
              "Remit", "Beneficiary", "Bank", "Total", "Net", "Gross", "Origin", "Packing", "Freight"]
IBAN_LABELS = ["Beneficiary IBAN", "Remit to IBAN", "Bank account (IBAN)", "Pay to", "Account", "Kontoinhaber IBAN",
               "Settlement account", "Beneficiary Bank IBAN"]
FIRST = ["Priya", "Lukas", "Ana", "Mohammed", "Wei Ling", "Oluwaseun", "Sofia", "Rahul", "Fatima", "Jonas",
         "Mei", "Carlos", "Aisha", "Hiroshi", "Elena", "Arjun", "Noura", "Pieter", "Siti", "Thomas"]
LAST = ["Raghavan", "Becker", "Garcia Lopez", "Al Mansoori", "Tan", "Adeyemi", "Rossi", "Mehta", "Khan",
        "Lindqvist", "Chen", "Ferreira", "Rahman", "Tanaka", "Popescu", "Iyer", "Al Hashimi", "de Vries",
        "Abdullah", "Murphy"]
STREETS_ES = ["Calle de Alcala", "Calle Mayor", "Avenida Diagonal", "Calle del Puerto", "Avenida de Andalucia",
              "Carrer de Valencia", "Paseo de la Castellana"]
CITIES_ES = [("28014", "Madrid"), ("08029", "Barcelona"), ("46024", "Valencia"), ("41001", "Sevilla")]
IN_AREAS = [("MIDC Industrial Area", "Taloja", "410208"), ("GIDC Estate", "Vapi", "396195"),
            ("Okhla Industrial Area Phase II", "New Delhi", "110020"), ("Peenya Industrial Area", "Bengaluru", "560058"),
            ("Ambattur Industrial Estate", "Chennai", "600058"), ("SIDCUL", "Haridwar", "249403")]


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.digits) for _ in range(n))


def _with_check(rng: random.Random, make, valid) -> str:
    while True:
        value = make()
        if valid(value):
            return value


def card(rng):
    prefix = rng.choice(["4", "51", "53", "37"])
    length = 15 if prefix == "37" else 16
    return _with_check(rng, lambda: prefix + _digits(rng, length - len(prefix)), checksums.luhn)


def iban(rng):
    country, body_len = rng.choice([("DE", 18), ("GB", 18), ("ES", 20), ("AE", 19), ("NL", 14), ("FR", 23)])
    def make():
        body = _digits(rng, body_len) if country != "GB" else "NWBK" + _digits(rng, 14)
        if country == "NL":
            body = "ABNA" + _digits(rng, 10)
        for check in range(2, 99):
            code = f"{country}{check:02d}{body}"
            if checksums.iban(code):
                return code
        return ""
    code = _with_check(rng, make, bool)
    return " ".join(code[i:i + 4] for i in range(0, len(code), 4))


def aadhaar(rng):
    num = _with_check(rng, lambda: rng.choice("23456789") + _digits(rng, 11), checksums.verhoeff)
    return f"{num[:4]} {num[4:8]} {num[8:]}"


def nric(rng):
    prefix = rng.choice("STFG")
    def make():
        body = _digits(rng, 7)
        for letter in string.ascii_uppercase:
            if checksums.sg_nric(prefix + body + letter):
                return prefix + body + letter
        return ""
    return _with_check(rng, make, bool)


def emirates_id(rng):
    num = _with_check(rng, lambda: "784" + rng.choice(["1975", "1982", "1990", "1988", "2001"]) + _digits(rng, 8),
                      checksums.luhn)
    return f"{num[:3]}-{num[3:7]}-{num[7:14]}-{num[14]}"


def ssn(rng):
    return f"{rng.randint(101, 665)}-{rng.randint(10, 99)}-{rng.randint(1000, 9999)}"


def nino(rng):
    return rng.choice(["AB", "CE", "JH", "PR", "WK", "NY"]) + " " + " ".join(_digits(rng, 2) for _ in range(3)) + " " + rng.choice("ABCD")


def pan(rng):
    return "".join(rng.choice(string.ascii_uppercase) for _ in range(3)) + "P" + rng.choice(string.ascii_uppercase) + _digits(rng, 4) + rng.choice(string.ascii_uppercase)


def passport(rng):
    """National formats: India, US/UK, Germany, France, China, Singapore, Spain, Canada, Italy, UAE."""
    up = string.ascii_uppercase
    return rng.choice([
        lambda: rng.choice("JKLMNPRSTUVZ") + _digits(rng, 7),                      # India
        lambda: _digits(rng, 9),                                                    # US, UK
        lambda: "C" + "".join(rng.choice("CFGHJKLMNPRTVWXYZ0123456789") for _ in range(8)),  # Germany
        lambda: _digits(rng, 2) + rng.choice(up) + rng.choice(up) + _digits(rng, 5),  # France
        lambda: rng.choice("EG") + _digits(rng, 8),                                 # China
        lambda: rng.choice("EK") + _digits(rng, 7) + rng.choice(up),               # Singapore
        lambda: "".join(rng.choice(up) for _ in range(3)) + _digits(rng, 6),       # Spain
        lambda: rng.choice(up) + rng.choice(up) + _digits(rng, 6),                  # Canada
        lambda: "Y" + rng.choice(up) + _digits(rng, 7),                             # Italy
        lambda: _digits(rng, 1) + _digits(rng, 7),                                  # UAE (8 digits)
    ])()


def phone(rng):
    return rng.choice([
        lambda: f"+91 {rng.choice('6789')}{_digits(rng, 4)} {_digits(rng, 5)}",
        lambda: f"+65 {rng.choice('689')}{_digits(rng, 3)} {_digits(rng, 4)}",
        lambda: f"+971 5{rng.choice('0256')} {_digits(rng, 3)} {_digits(rng, 4)}",
        lambda: f"+49 40 {_digits(rng, 7)}",
        lambda: f"({rng.randint(201, 989)}) {rng.randint(201, 989)}-{_digits(rng, 4)}",
        lambda: f"+34 6{_digits(rng, 2)} {_digits(rng, 3)} {_digits(rng, 3)}",
        lambda: f"+44 7{_digits(rng, 3)} {_digits(rng, 6)}",
    ])()


def person(rng):
    return f"{rng.choice(FIRST)} {rng.choice(LAST)}"


def address(rng):
    return rng.choice([
        lambda: f"{rng.choice(STREETS_ES)} {rng.randint(1, 180)}, " + "{} {}".format(*rng.choice(CITIES_ES)),
        lambda: f"C/ Mayor {rng.randint(1, 99)}, {rng.randint(1, 6)}º B, " + "{} {}".format(*rng.choice(CITIES_ES)),
        lambda: "Plot No. {}, {}, {} {}".format(rng.randint(1, 400), *rng.choice(IN_AREAS)),
        lambda: "Survey No. {}/{}, {}, {} {}".format(rng.randint(10, 300), rng.randint(1, 9), *rng.choice(IN_AREAS)),
        lambda: "Shed No. {}, {}, {}".format(rng.randint(1, 60), *rng.choice(IN_AREAS)[:2]),
        lambda: f"{rng.randint(1, 40)} Tuas South Avenue {rng.randint(1, 9)}, Singapore 63{_digits(rng, 4)}",
        lambda: f"{rng.randint(10, 999)} Harbour Road, Felixstowe IP11 {rng.randint(1, 9)}AB",
        lambda: f"{rng.randint(100, 9999)} Ocean Gate Drive, Savannah, GA 314{_digits(rng, 2)}",
    ])()


def dob(rng):
    return rng.choice([f"{rng.randint(1, 28):02d}/{rng.randint(1, 12):02d}/{rng.randint(1950, 2002)}",
                       f"{rng.randint(1, 28)} {rng.choice(['March', 'July', 'October'])} {rng.randint(1950, 2002)}"])


# Obfuscations of a number: the detector must see through them (the guard normalises first).
def spaced(value: str) -> str:
    return " ".join(c for c in value if c != " " and c != "-")


def dotted(value: str) -> str:
    return value.replace(" ", ".").replace("-", ".")


def wide_gaps(value: str) -> str:
    return value.replace(" ", "   ").replace("-", "   ")


def fullwidth_joined(value: str) -> str:
    out = []
    for i, c in enumerate(value):
        out.append(chr(ord(c) + 0xFEE0) if c.isdigit() else c)
        if i % 3 == 2:
            out.append("\u2060" if i % 2 else "\u200c")  # word joiner, zero-width non-joiner
    return "".join(out)


OBFUSCATIONS = {"spaced": spaced, "dotted": dotted, "wide_gaps": wide_gaps, "fullwidth": fullwidth_joined}


# Look-alikes (never labelled): reference numbers and codes of the trade.
def hs_code(rng):
    base = rng.choice(HS)
    return rng.choice([base, base + "." + _digits(rng, 2), base + "." + _digits(rng, 4), base + _digits(rng, 2) + _digits(rng, 2),
                       base[:4] + " " + base[5:] + " " + _digits(rng, 2), base + "." + _digits(rng, 2) + "." + _digits(rng, 2)])


def ref(rng):
    year = rng.randint(2022, 2026)
    return rng.choice([
        lambda: f"Invoice No. INV-{year}-{_digits(rng, 5)}",
        lambda: f"invoice {_digits(rng, 10)}",
        lambda: f"B/L No. {rng.choice(['MAEU', 'HLCU', 'MSCU', 'ONEY'])}{_digits(rng, 9)}",
        lambda: f"AWB {rng.choice(['176', '020', '618', '157'])}-{_digits(rng, 8)}",
        lambda: f"container {rng.choice(['MSKU', 'TGHU', 'CMAU', 'HLXU'])} {_digits(rng, 6)}-{_digits(rng, 1)}",
        lambda: f"PO {_digits(rng, 10)}",
        lambda: f"booking {_digits(rng, 9)}",
        lambda: f"MRN {year % 100}DE{_digits(rng, 12)}A{_digits(rng, 1)}",
        lambda: f"shipping bill {_digits(rng, 7)} dated {rng.randint(1, 28):02d}.{rng.randint(1, 12):02d}.{year}",
        lambda: f"entry number {_digits(rng, 3)}-{_digits(rng, 7)}-{_digits(rng, 1)}",
        lambda: f"EORI DE{_digits(rng, 12)}",
        lambda: f"IEC {_digits(rng, 10)}",
        lambda: f"seal {_digits(rng, 7)}",
        lambda: f"LC {_digits(rng, 3)}/{year}/{_digits(rng, 4)}",
        lambda: f"job {year}/{_digits(rng, 4)}",
    ])()


def amount(rng):
    return rng.choice([f"{rng.choice(CURRENCIES)} {rng.randint(1, 99)},{_digits(rng, 3)}.{_digits(rng, 2)}",
                       f"{rng.randint(1, 9)}.{_digits(rng, 3)},{_digits(rng, 2)} EUR",
                       f"INR {rng.randint(1, 9)},{_digits(rng, 2)},{_digits(rng, 3)}",
                       f"{rng.randint(100, 9999)} pcs", f"{rng.randint(1, 30)},{_digits(rng, 3)}.{rng.randint(0, 9)} kg"])


def date(rng):
    year = rng.randint(2023, 2026)
    return rng.choice([f"{rng.randint(1, 28):02d}.{rng.randint(1, 12):02d}.{year}", f"{year}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
                       f"{rng.randint(1, 28)} {rng.choice(MONTHS)} {year}", f"{rng.randint(1, 28):02d}/{rng.randint(1, 12):02d}/{year}"])


def lookalike_sentence(rng) -> str:
    port, port2 = rng.sample(PORTS, 2)
    return rng.choice([
        lambda: f"{rng.choice(LINE_WORDS)} {rng.randint(1, 40)} of {rng.randint(40, 80)}: {rng.choice(GOODS)}, HS {hs_code(rng)}.",
        lambda: f"Shipment of {rng.choice(GOODS)} under HTS {hs_code(rng)} from {port} to {port2}, {rng.choice(INCOTERMS)} {port} (Incoterms 2020).",
        lambda: f"{rng.choice(COMPANIES)} ships via {port} on the {rng.choice(VESSELS)}, voyage {_digits(rng, 3)}{rng.choice('EWNS')}.",
        lambda: f"{ref(rng)} for {amount(rng)}, ETD {date(rng)}.",
        lambda: f"{rng.choice(LINE_WORDS)} shipments through {port} cleared on {date(rng)}; {ref(rng)}.",
        lambda: f"Tariff heading {hs_code(rng)} applies to the {rng.choice(GOODS)}; {ref(rng)}.",
        lambda: f"{rng.choice(MONTHS)} {rng.choice(['volumes', 'arrivals', 'bookings'])} at {port} rose; {ref(rng)}, {amount(rng)}.",
        lambda: f"Port of discharge: {port}\nPlace of delivery: {port2}\n{ref(rng)}",
        lambda: f"Reclassify {hs_code(rng)} to {hs_code(rng)} for {rng.choice(COMPANIES)}, {ref(rng)}.",
        lambda: f"{rng.choice(LINE_WORDS)} marks: {rng.choice(COMPANIES).split()[0].upper()}/{port.split()[0].upper()}/{rng.randint(1, 99)}, gross {amount(rng)}.",
    ])()


# Identifiers that are PII, with the keyword that introduces them.
IDENTIFIERS = {
    "PERSON": (person, ["Consignee contact: {}", "Attn: {}", "Declarant {} signed the form", "I am {}, travelling to Dubai",
                        "Please call {} at the warehouse", "Authorised signatory: {}"]),
    "PHONE": (phone, ["call {}", "Tel: {}", "mobile {}", "contact number {}", "WhatsApp {}"]),
    "EMAIL": (lambda rng: f"{rng.choice(['ops', 'priya.r', 'l.becker', 'import.desk'])}@{rng.choice(['example.com', 'shipco.example', 'mail.example.in'])}",
              ["email {}", "Email: {}", "write to {}"]),
    "CREDIT_CARD": (card, ["card {}", "paid with card number {}", "Card no.: {}"]),
    "IBAN": (iban, ["{label}: {}", "{label} {}"]),
    "US_SSN": (ssn, ["SSN {}", "social security number {}", "SSN: {}"]),
    "UK_NINO": (nino, ["NI number {}", "National Insurance number {}"]),
    "AADHAAR": (aadhaar, ["Aadhaar {}", "Aadhaar no. {}", "UIDAI number {}"]),
    "PAN": (pan, ["PAN {}", "PAN card {}"]),
    "NRIC": (nric, ["NRIC {}", "FIN {}", "NRIC/FIN: {}"]),
    "EMIRATES_ID": (emirates_id, ["Emirates ID {}", "EID {}"]),
    "PASSPORT": (passport, ["passport {}", "passport no. {}", "Passport Number: {}", "passport number {}", "passport #{}"]),
    "DATE_OF_BIRTH": (dob, ["date of birth {}", "DOB: {}", "born on {}"]),
    "ADDRESS": (address, ["deliver to {}", "Consignee address: {}", "warehouse at {}", "Address: {}"]),
}
# Types whose value is a number an obfuscation applies to.
NUMERIC = ("PHONE", "CREDIT_CARD", "US_SSN", "AADHAAR", "EMIRATES_ID", "IBAN")


def _row(rng: random.Random, pii_type: str | None, obfuscation: str | None) -> dict:
    parts: list[tuple[str, str | None]] = []
    for _ in range(rng.randint(1, 2)):
        parts.append((lookalike_sentence(rng) + rng.choice([" ", "\n"]), None))
    if pii_type:
        make, templates = IDENTIFIERS[pii_type]
        value = make(rng)
        if pii_type == "US_SSN" and rng.random() < 0.35:
            value = value.replace("-", "")  # no dashes, next to its keyword
        if obfuscation:
            value = OBFUSCATIONS[obfuscation](value)
        template = rng.choice(templates).replace("{label}", rng.choice(IBAN_LABELS))
        before, after = template.split("{}")
        parts += [(before, None), (value, pii_type), (after + rng.choice([".", " for the release.", ";"]) + " ", None)]
        parts.append((lookalike_sentence(rng), None))
    text, spans = "", []
    for chunk, kind in parts:
        if kind:
            spans.append({"type": kind, "start": len(text), "end": len(text) + len(chunk)})
        text += chunk
    kind = "lookalikes_only" if not pii_type else f"{pii_type}:{obfuscation or 'plain'}"
    return {"text": text.strip() if not spans else text.rstrip(), "spans": spans, "kind": kind}


def build(seed: int = 16) -> dict[str, list[dict]]:
    rng = random.Random(seed)
    rows = [_row(rng, None, None) for _ in range(220)]
    for pii_type in IDENTIFIERS:
        rows += [_row(rng, pii_type, None) for _ in range(24)]
        if pii_type in NUMERIC:
            for obfuscation in OBFUSCATIONS:
                rows += [_row(rng, pii_type, obfuscation) for _ in range(6)]
    return split(rows, rng)


def main() -> None:
    splits = build()
    write("pii", splits)
    for name, rows in splits.items():
        print(f"{name}: {len(rows)} rows, {sum(len(r['spans']) for r in rows)} PII spans")


if __name__ == "__main__":
    main()
