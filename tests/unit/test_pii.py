"""PII scrubbing on real labelled sentences (presidio-research, dolma) and on hard negatives."""
from __future__ import annotations

import gzip
import json
import os
import re
from collections import Counter
from pathlib import Path

import pytest
from pydantic import ValidationError

from components.clean.doc import Doc
from components.clean.pii import KINDS, PiiParams, PiiPlaceholders, PiiScrubber, find_pii

REPO = Path(__file__).resolve().parents[2]
PII_DATA = Path(os.environ.get("LLM_LIFECYCLE_DATA_DIR") or REPO.parent / "shared" / "data") / "pii"
needs_data = pytest.mark.skipif(not PII_DATA.is_dir(), reason=f"PII test data not found at {PII_DATA}")
PRESIDIO_KINDS = {"EMAIL_ADDRESS": "email", "PHONE_NUMBER": "phone", "IP_ADDRESS": "ip"}


def scrub(text: str, params: PiiParams = PiiParams()) -> Doc:
    doc = Doc(id="t/0", text=text, source="test")
    assert PiiScrubber(params)(doc) is None  # never removes a document
    return doc


def found(text: str) -> list[tuple[str, str]]:
    return [(kind, text[start:end]) for kind, start, end in find_pii(text)]


@pytest.fixture(scope="module")
def presidio() -> list[dict]:
    return json.loads((PII_DATA / "presidio-synth-part.json").read_text())


@needs_data
def test_every_labelled_presidio_value_is_replaced_and_counted(presidio):
    labelled = [row for row in presidio if any(s["entity_type"] in PRESIDIO_KINDS for s in row["spans"])]
    assert len(labelled) > 50
    for row in labelled:
        doc = scrub(row["full_text"])
        for span in row["spans"]:
            if span["entity_type"] in PRESIDIO_KINDS:
                assert span["entity_value"] not in doc.text, row["full_text"]
        expected = Counter(PRESIDIO_KINDS[s["entity_type"]] for s in row["spans"] if s["entity_type"] in PRESIDIO_KINDS)
        assert doc.meta["pii"] == {kind: expected[kind] for kind in KINDS}, row["full_text"]


@needs_data
def test_presidio_hard_negatives_are_left_alone(presidio):
    """Credit cards, SSNs, dates, IBANs, ZIP codes, licences: none may be taken for a phone or an IP."""
    negative_types = {"CREDIT_CARD", "US_SSN", "DATE_TIME", "IBAN_CODE", "ZIP_CODE", "US_DRIVER_LICENSE"}
    hits = []
    for row in presidio:
        for kind, start, end in find_pii(row["full_text"]):
            hits += [(kind, s["entity_value"]) for s in row["spans"]
                     if s["entity_type"] in negative_types and start < s["end_position"] and s["start_position"] < end]
    assert hits == []


@needs_data
def test_dolma_emails_are_exactly_the_marked_ones():
    folder = PII_DATA / "dolma-email-spans"
    with gzip.open(folder / "documents-000.json.gz", "rt") as docs, \
            gzip.open(folder / "expected-email-spans.json.gz", "rt") as expected:
        for doc, truth in zip(map(json.loads, docs), map(json.loads, expected)):
            marked = re.findall(r"\[B-EMAIL\](.*?)\[E-EMAIL\]", truth["text"])
            assert [value for kind, value in found(doc["text"]) if kind == "email"] == marked


@pytest.mark.parametrize("text, value", [
    ("Call +1 (555) 123-4567 today", "+1 (555) 123-4567"),
    ("Call 555.123.4567 today", "555.123.4567"),
    ("London office: +44 20 7946 0958.", "+44 20 7946 0958"),
    ("or (555) 123-4567", "(555) 123-4567"),
    ("desk 555-123-4567 ext. 89", "555-123-4567 ext. 89"),
    ("Paris +33 1 23 45 67 89", "+33 1 23 45 67 89"),
    ("mobile 06 12 34 56 78", "06 12 34 56 78"),
    ("ring 020 7946 0958", "020 7946 0958"),
    ("Tel: 467 3395", "467 3395"),
    ("toll free 1-800-555-1234", "1-800-555-1234"),
    ("Fax: +41 (0)96 471 07 95", "+41 (0)96 471 07 95"),
    ("Call 9876543210 now", "9876543210"),
])
def test_common_phone_formats_are_found_whole(text, value):
    assert found(text) == [("phone", value)]


@pytest.mark.parametrize("text, value", [
    ("server 192.168.0.1 down", "192.168.0.1"),
    ("listening on 10.0.0.255:8080", "10.0.0.255"),
    ("http://192.168.1.1/admin", "192.168.1.1"),
    ("v6 2001:db8::8a2e:370:7334.", "2001:db8::8a2e:370:7334"),
    ("2001:0db8:85a3:0000:0000:8a2e:0370:7334", "2001:0db8:85a3:0000:0000:8a2e:0370:7334"),
    ("mapped ::ffff:192.0.2.128 here", "::ffff:192.0.2.128"),
    ("call 192.168.100.200", "192.168.100.200"),  # also a phone-like digit grouping next to a phone word
])
def test_ip_addresses_are_found_whole(text, value):
    assert found(text) == [("ip", value)]


@pytest.mark.parametrize("text, value", [
    ("write to first.last+tag@sub.example.co.uk.", "first.last+tag@sub.example.co.uk"),
    ("Mail me: o'brien@example.ie", "o'brien@example.ie"),
    ("('john@x.com')", "john@x.com"),
])
def test_email_addresses_are_found_whole(text, value):
    assert found(text) == [("email", value)]


@pytest.mark.parametrize("text", [
    "Released on 2023-04-05, again on 12/05/2023 and 05.12.2023.",
    "When: 2000-04-16 11:34:35",
    "the war of 1990-2005, in 1914 1918",
    "It costs $1,234,567.89 or € 1 234 567 or 1 299 000 USD.",
    "Phone sales rose 1 234 567 euros",
    "Upgrade to v1.2.3.4 now", "version 1.2.3.4 is out", "build 1.2.3.4.5", "Python 3.11.4 and macOS 10.15.7",
    "ISBN 978-3-16-148410-0", "ISBN 0-306-40615-2", "see 978-0-306-40615-7",
    "order 123456789012345678", "card 4111 1111 1111 1111", "Here's my SSN: 123-45-6789",
    "999.1.1.1 and 256.1.1.1 and 01.02.03.04",
    "at 12:30:45", "MAC 00:1a:2b:3c:4d:5e", "std::vector<int> a; Foo::bar(); dead::beef",
    "logo@2x.png", "at 51.5074, -0.1278", "population 7,900,000,000", "pi is 3.14159265358979",
    "call me at 5 pm", "Call 1234567 for the population", "ZIP: 394 13", "page 123 456 789 of the book",
    "0.145833 gallons + 0.291667 gallons", "my driver's license number is 2270-66-1551",
    "Charitable #138620257RR0001",
])
def test_hard_negatives_are_not_pii(text):
    assert found(text) == []


def test_scrubber_replaces_counts_and_leaves_nothing_for_the_gate():
    text = "Mail a@b.org or c@d.net, call +1 555 123 4567, host 10.1.2.3 (not v1.2.3.4)."
    doc = scrub(text)
    assert doc.text == "Mail <EMAIL> or <EMAIL>, call <PHONE>, host <IP> (not v1.2.3.4)."
    assert doc.meta["pii"] == {"email": 2, "phone": 1, "ip": 1}
    assert find_pii(doc.text) == []


def test_a_placeholder_next_to_a_number_is_scrubbed_to_the_end():
    # No phone word is near "467 3395" until its neighbour becomes "[phone]": a second pass must catch it.
    text = "555-123-4567 or else, failing that, 467 3395"
    assert found(text) == [("phone", "555-123-4567")]
    doc = scrub(text, PiiParams(placeholders=PiiPlaceholders(phone="[phone]")))
    assert doc.text == "[phone] or else, failing that, [phone]"
    assert doc.meta["pii"]["phone"] == 2 and find_pii(doc.text) == []


def test_placeholders_and_kinds_are_configurable():
    params = PiiParams(phone=False, placeholders=PiiPlaceholders(email="[mail]", ip="[ip]"))
    doc = scrub("a@b.org 555-123-4567 10.1.2.3", params)
    assert doc.text == "[mail] 555-123-4567 [ip]"
    assert doc.meta["pii"] == {"email": 1, "phone": 0, "ip": 1}


def test_disabled_scrubber_touches_nothing():
    doc = scrub("a@b.org", PiiParams(enabled=False))
    assert doc.text == "a@b.org" and "pii" not in doc.meta


def test_params_reject_unknown_keys():
    with pytest.raises(ValidationError):
        PiiParams(emails=False)
