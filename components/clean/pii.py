"""PII scrubbing: e-mail addresses, phone numbers and IP addresses become typed placeholders.

`find_pii` is the single source of truth: the scrubber replaces what it finds, and the validation gate
checks that it finds nothing in the cleaned text, so the two can never disagree about what PII looks like.

Decisions (precision matters too: a false positive mangles numbers the model should learn):
- Phones: a broad candidate regex, then `_is_phone` judges the digits. Unmistakable shapes count
  everywhere: a "+" country code, an area code in parentheses, North-American 3-3-4, a national number
  with a trunk "0" (020 7946 0958, 0490 75 40 81), five pairs (06 12 34 56 78). Any other grouping of
  7-15 digits ("467 3395", "78 651 450", one run of 10-11: "9498777106") counts only near a phone word
  ("tel", "call", "fax", ...), because the same shapes are also amounts, codes and IDs. Dates, year
  ranges, US social security numbers (3-2-4), prices and more than 15 digits (cards, IDs) never count.
- IPv4: each octet 0-255 without leading zeros. A dotted quad glued to a letter ("v1.2.3.4"), inside a
  longer dotted run ("1.2.3.4.5") or after the word "version" is a version, not an address; any other
  valid quad is taken as an address: leaking an IP is worse than masking a rare four-part version.
- IPv6: whatever Python's `ipaddress` accepts (full, "::"-compressed, IPv4 tail), with at least two groups
  and one digit, so C++ scopes ("std::map"), times (12:30:45) and MAC addresses do not match; "::1" is left.
"""
from __future__ import annotations

import ipaddress
import re

from pydantic import Field

from components.clean.doc import Doc, Filter
from components.params import StrictModel

KINDS = ("email", "phone", "ip")
_PRIORITY = ("email", "ip", "phone")  # when two findings of the same length overlap: 10.1.2.3 is an IP

_EMAIL = re.compile(
    r"(?<![\w.%+-])[\w%+-]+(?:[.'][\w%+-]+)*"  # local part, whole; dots (and o'brien's ') only inside
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"  # domain labels
    r"(?!(?:png|jpe?g|gif|svg|webp)\b)[A-Za-z]{2,24}(?![\w-])"  # a TLD, but "logo@2x.png" is an image
)

_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = re.compile(rf"(?<![\w.-]){_OCTET}(?:\.{_OCTET}){{3}}(?![\w-]|\.\d)")
_IPV6 = re.compile(  # candidates only: _is_ipv6 decides; an IPv4 tail is tried first so it is kept whole
    r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:\d{1,3}(?:\.\d{1,3}){3}|[0-9A-Fa-f]{1,4})?(?![\w:]|\.\d)")
_VERSION_WORD = re.compile(r"\b(?:version|release|build|ver\.?)\s*$", re.IGNORECASE)

_PHONE = re.compile(
    r"""(?<![\w+$€£¥#@/-])(?<!\d[.,:/])  # not inside a word, price, ID, decimal, time or date
    (?P<number>
      (?:\+\d{1,3}[ .-]?)?             # country code ("+ 0.29" is a sum)
      (?:\(0\)\ ?)?                    # the trunk 0 some countries write after it: +44 (0)20
      (?:\(\d{1,5}\)[ .-]?)?           # area code in parentheses
      \d{1,15}(?:[ .-]\d{1,15}){0,7}   # digit groups, one separator between two (bounded: linear time)
    )
    (?:\ ?(?:x|ext\.?|extension)\ ?\d{1,6})?
    (?![\w@]|[ .,:/-]?\d)              # the whole number or nothing: never a piece of a longer one
    """,
    re.VERBOSE | re.IGNORECASE,
)
_UNMISTAKABLE_PHONES = [re.compile(p) for p in (
    r"^\+",  # a country code
    r"^\(\d{2,5}\)",  # an area code in parentheses
    r"^(?:1[ .-])?\d{3}([ .-])\d{3}\1\d{4}$",  # North America: 555-123-4567, 1.555.123.4567
    r"^0(?=(?:\D*\d){8})\d{1,4}(?:[ .-]\d{2,})+$",  # a trunk 0, 9+ digits: 020 7946 0958, 0490 75 40 81
    r"^\d{2}([ .-])\d{2}(?:\1\d{2}){3}$",  # five pairs: 06 12 34 56 78
)]
_NOT_PHONES = [re.compile(p) for p in (
    r"^(?:1[89]|20)\d\d([ ./-])[01]?\d\1[0-3]?\d\b",  # ISO date, maybe followed by the hour
    r"^[0-3]?\d([ ./-])[0-3]?\d\1(?:1[89]|20)\d\d\b",  # day-month-year / month-day-year
    r"^(?:(?:1[89]|20)\d\d(?:[ .-]|$))+$",  # years and year ranges: 1990-2005
    r"^\(?(?:1[89]|20)\d\d\)",  # a year in parentheses, not an area code
    r"^\d{3}-\d{2}-\d{4}$",  # a US social security number
)]
_PHONE_WORD = re.compile(
    r"\b(?:(?:tele|cell|smart)?phones?|tel|fax|mobile|mob|cell|call(?:ed|ing|s)?|dial|sms|text|whatsapp"
    r"|hotline|helpline|contact|reach|answer(?:ing)?|messages?|office|desk)\b",
    re.IGNORECASE,
)
_MONEY_BEFORE = re.compile(r"(?:[$€£¥]|\b(?:USD|EUR|GBP|Rs\.?))\s?$", re.IGNORECASE)
_MONEY_AFTER = re.compile(r"^\s?(?:[$€£¥%]|(?:USD|EUR|GBP|dollars?|euros?|pounds?)\b)", re.IGNORECASE)
_PHONE_WORD_BEFORE = 40  # characters: covers "Phone:\n" or "call me on" before the number
_PHONE_WORD_AFTER = 12  # and a label after it: "781 1704 office", "345-899-3560 (fax)"


def find_pii(text: str, kinds: tuple[str, ...] = KINDS) -> list[tuple[str, int, int]]:
    """(kind, start, end) of every e-mail address, phone number and IP address, sorted, not overlapping."""
    found = []
    if "email" in kinds:
        found += [("email", m.start(), m.end()) for m in _EMAIL.finditer(text)]
    if "ip" in kinds:
        found += [("ip", m.start(), m.end()) for m in _IPV4.finditer(text) if not _after_version_word(text, m)]
        found += [("ip", m.start(), m.end()) for m in _IPV6.finditer(text) if _is_ipv6(m.group())]
    if "phone" in kinds:
        found += [("phone", m.start(), m.end()) for m in _PHONE.finditer(text) if _is_phone(text, m)]
    return _without_overlaps(found)


def _without_overlaps(found: list[tuple[str, int, int]]) -> list[tuple[str, int, int]]:
    # Each kind's matches never overlap one another, so overlaps are between two kinds: the longer
    # finding wins, on a tie the kind that comes first in _PRIORITY.
    kept: list[tuple[str, int, int]] = []
    for finding in sorted(found, key=lambda f: (f[1], _PRIORITY.index(f[0]))):
        if kept and finding[1] < kept[-1][2]:
            if _rank(finding) > _rank(kept[-1]):
                kept[-1] = finding
            continue
        kept.append(finding)
    return kept


def _rank(finding: tuple[str, int, int]) -> tuple[int, int]:
    kind, start, end = finding
    return end - start, -_PRIORITY.index(kind)


def _after_version_word(text: str, match: re.Match) -> bool:
    return bool(_VERSION_WORD.search(text[max(0, match.start() - 10):match.start()]))


def _is_ipv6(candidate: str) -> bool:
    groups = [g for g in re.split(r"[:.]", candidate) if g]
    if len(groups) < 2 or not any(c.isdigit() for c in candidate):
        return False
    try:
        ipaddress.IPv6Address(candidate)
    except ValueError:
        return False
    return True


def _is_phone(text: str, match: re.Match) -> bool:
    number = match["number"]
    digits = re.sub(r"\D", "", number)
    if not 7 <= len(digits) <= 15 or any(p.search(number) for p in _NOT_PHONES):
        return False
    if _MONEY_BEFORE.search(text[max(0, match.start() - 5):match.start()]) or _MONEY_AFTER.match(
            text[match.end():match.end() + 10]):
        return False
    if any(p.search(number) for p in _UNMISTAKABLE_PHONES):
        return True
    if digits == number and not 10 <= len(digits) <= 11:  # other runs of digits are amounts, IDs, cards
        return False
    return _phone_word_near(text, match.start(), match.end())


def _phone_word_near(text: str, start: int, end: int) -> bool:
    before = text[max(0, start - _PHONE_WORD_BEFORE):start]
    after = text[end:end + _PHONE_WORD_AFTER]
    return bool(_PHONE_WORD.search(before) or _PHONE_WORD.search(after))


class PiiPlaceholders(StrictModel):
    email: str = "<EMAIL>"
    phone: str = "<PHONE>"
    ip: str = "<IP>"


class PiiParams(StrictModel):
    enabled: bool = True
    email: bool = True
    phone: bool = True
    ip: bool = True
    placeholders: PiiPlaceholders = Field(default_factory=PiiPlaceholders,
                                          description="what each kind of finding is replaced by")


class PiiScrubber(Filter):
    """Never removes a document: replaces PII by placeholders and counts it in doc.meta["pii"]."""

    name = "pii"
    _MAX_PASSES = 3  # a placeholder can be the phone word that makes a neighbouring number a phone

    def __init__(self, params: PiiParams = PiiParams()):
        self.params = params
        self.kinds = tuple(kind for kind in KINDS if getattr(params, kind))

    def __call__(self, doc: Doc) -> None:
        if not self.params.enabled:
            return None
        counts = dict.fromkeys(KINDS, 0)
        for _ in range(self._MAX_PASSES):  # until find_pii, which the validation gate runs, finds nothing
            found = find_pii(doc.text, self.kinds)
            if not found:
                break
            doc.text = self._replace(doc.text, found)
            for kind, _, _ in found:
                counts[kind] += 1
        doc.meta["pii"] = counts
        return None

    def _replace(self, text: str, found: list[tuple[str, int, int]]) -> str:
        parts, position = [], 0
        for kind, start, end in found:
            parts += [text[position:start], getattr(self.params.placeholders, kind)]
            position = end
        return "".join(parts + [text[position:]])
