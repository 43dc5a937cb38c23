"""Read a WARC stream record by record: a row per kept HTML response, a skip reason per other record.

Parsing is fastwarc's; HTTP payload decoding is done here, record by record, because real crawls lie
(ClueWeb09 says `Content-Encoding: gzip` over bodies the crawler already decompressed) and one bad
record must not end the file.
"""
from __future__ import annotations

import base64
import codecs
import hashlib
import io
import re
import zlib
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import NamedTuple

import charset_normalizer
from fastwarc.stream_io import BrotliReader, ChunkedReader
from fastwarc.warc import ArchiveIterator, WarcRecord, WarcRecordType

from components.ingest.params import CrawlParams
from components.ingest.sources import SourceStream

MANDATORY_HEADERS = ("WARC-Record-ID", "Content-Length")  # in every WARC version, 0.18 included
HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
MAX_REPLACEMENT_RATIO = 0.1  # more U+FFFD than this and the text is noise, not a page
META_SNIFF_BYTES = 2048
META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([\w.:+-]+)""", re.IGNORECASE)
# Labels that browsers (WHATWG Encoding) decode as a superset codec; pages rely on the extra characters.
SUPERSET_CODECS = {
    "ascii": "cp1252", "iso8859-1": "cp1252", "gb2312": "gb18030", "gbk": "gb18030",
    "shift_jis": "cp932", "euc_kr": "cp949", "tis-620": "cp874", "iso8859-11": "cp874",
}


class Skip(NamedTuple):
    """Why a record was not kept. `error` is set only when a problem ended the whole file."""

    reason: str
    error: str | None = None


def read_warc(stream: SourceStream, params: CrawlParams) -> Iterator[dict | Skip]:
    """Yield a row or a Skip per record. Bad bytes end the file with a Skip; failing I/O raises."""
    records_seen = 0
    try:
        for record in ArchiveIterator(stream, parse_http=True, quirks_mode=True):
            records_seen += 1
            yield _row_or_skip(record, stream.url, params)
    except (OSError, ValueError) as error:
        if stream.error is not None:
            raise stream.error from error
        reason = "truncated" if records_seen else "unreadable_file"
        yield Skip(reason, f"{type(error).__name__}: {error}")
        return
    if not records_seen:  # quirks mode resynchronises on "WARC/" lines, so a non-WARC file yields nothing
        yield Skip("unreadable_file", "no WARC record found")


def _row_or_skip(record: WarcRecord, source: str, params: CrawlParams) -> dict | Skip:
    if not all(name in record.headers for name in MANDATORY_HEADERS):  # the file ended inside a header block
        return Skip("truncated")
    if record.record_type != WarcRecordType.response:
        if _is_short(record):
            return Skip("truncated")
        return Skip("revisit" if record.record_type == WarcRecordType.revisit else "not_response")
    if not record.is_http or record.http_headers.status_code != 200:
        return Skip("http_status")
    if (record.http_content_type or "").lower() not in HTML_TYPES:
        return Skip("not_html")
    if record.content_length > params.max_html_bytes:
        return Skip("too_large")  # decided before reading, so a huge body never enters memory
    expected = record.content_length
    body = record.reader.read()
    if len(body) < expected:
        return Skip("truncated")
    payload = decode_http_body(body, record.http_headers, params.max_html_bytes)
    if len(payload) > params.max_html_bytes:
        return Skip("too_large")
    if len(payload) < params.min_html_bytes:
        return Skip("too_small")
    decoded = decode_html(payload, record.http_charset)
    if decoded is None:
        return Skip("undecodable")
    html, charset = decoded
    return {
        "record_id": record.record_id,
        "url": (record.headers.get("WARC-Target-URI") or "").strip("<>"),  # wget writes <url> (WARC 1.1 erratum)
        "fetch_time": _fetch_time(record),
        "payload_digest": record.headers.get("WARC-Payload-Digest") or payload_digest(body),
        "html": html,
        "charset": charset,
        "source": source,
        "content_length": len(payload),
    }


def _is_short(record: WarcRecord) -> bool:
    expected = record.content_length
    return record.reader.consume() < expected


def _fetch_time(record: WarcRecord) -> datetime | None:
    """WARC-Date, else the HTTP Date (ClueWeb09 writes dates like 2008-10-294T05:21:46-0700)."""
    fetched = record.record_date or (record.http_date if record.is_http else None)
    return fetched.astimezone(timezone.utc) if fetched else None


def payload_digest(body: bytes) -> str:
    """Common Crawl's WARC-Payload-Digest: SHA-1, base32, of the HTTP body as transferred."""
    return "sha1:" + base64.b32encode(hashlib.sha1(body).digest()).decode()


def decode_http_body(body: bytes, http_headers, limit: int) -> bytes:
    """Undo Transfer-Encoding and Content-Encoding, reading at most limit + 1 decoded bytes.

    A body that does not decode is returned as it is: crawlers often stored it decoded and kept the header.
    """
    if "chunked" in (http_headers.get("Transfer-Encoding") or "").lower():
        body = _decoded_or_raw(body, lambda raw: ChunkedReader(io.BytesIO(raw)).read())
    encoding = (http_headers.get("Content-Encoding") or "").strip().lower()
    if encoding in ("gzip", "x-gzip", "deflate"):
        body = _decoded_or_raw(body, lambda raw: _inflate(raw, limit + 1))
    elif encoding == "br":
        body = _decoded_or_raw(body, lambda raw: BrotliReader(io.BytesIO(raw)).read(limit + 1))
    return body


def _decoded_or_raw(raw: bytes, decode) -> bytes:
    try:
        return decode(raw)
    except (OSError, zlib.error):
        return raw


def _inflate(raw: bytes, max_length: int) -> bytes:
    if raw[:2] == b"\x1f\x8b" or raw[:1] == b"\x78":  # gzip or zlib header
        # No end-of-stream check: a capture cut at the crawler's size limit still starts the page.
        return zlib.decompressobj(wbits=47).decompress(raw, max_length)
    inflater = zlib.decompressobj(wbits=-15)  # a bare deflate stream, as some servers send "deflate"
    inflated = inflater.decompress(raw, max_length)
    if not inflater.eof and len(inflated) < max_length:  # headerless bytes are trusted only if they end cleanly
        raise zlib.error("not a deflate stream")
    return inflated


def decode_html(payload: bytes, http_charset: str | None) -> tuple[str, str] | None:
    """Decode with the declared charset (HTTP, then <meta>), else a detected one, else UTF-8.

    Returns (text, codec name), or None when most of the text would be replacement characters.
    """
    charset = (
        _codec(http_charset)
        or _codec(_meta_charset(payload))
        or _codec(_detected_charset(payload))
        or "utf-8"
    )
    html = payload.decode(charset, errors="replace")
    if html.count("\ufffd") > MAX_REPLACEMENT_RATIO * len(html):
        return None
    return html, charset


def _meta_charset(payload: bytes) -> str | None:
    match = META_CHARSET.search(payload[:META_SNIFF_BYTES])
    return match.group(1).decode("ascii") if match else None


def _detected_charset(payload: bytes) -> str | None:
    best = charset_normalizer.from_bytes(payload).best()
    return best.encoding if best else None


def _codec(label: str | None) -> str | None:
    """Python's codec name for a charset label (with the WHATWG supersets), None if unknown."""
    if not label:
        return None
    try:
        name = codecs.lookup(label.strip()).name
    except LookupError:
        return None
    return SUPERSET_CODECS.get(name, name)
