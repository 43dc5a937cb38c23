"""Crawl ingest on the real public WARC files in ../shared/data/crawl, plus S3 (moto) and HTTP (loopback) sources."""
from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import io
import os
import re
import shutil
import socket
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from warcio.archiveiterator import ArchiveIterator
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from components.ingest import CrawlParams, Source, SourceNotFound, ingest
from components.ingest.params import S3Options
from components.ingest.warc import payload_digest

REPO = Path(__file__).resolve().parents[2]
CRAWL = Path(os.environ.get("LLM_LIFECYCLE_DATA_DIR", REPO.parent / "shared" / "data")) / "crawl"
pytestmark = pytest.mark.skipif(not CRAWL.is_dir(), reason=f"test data not found at {CRAWL}")
HTML_TYPES = ("text/html", "application/xhtml+xml")


def run(tmp_path: Path, *uris: str, **options) -> dict:
    params = CrawlParams(sources=[Source(uri=uri) for uri in uris], **options)
    return ingest(params, tmp_path / "out", progress=False)


def read_rows(out: Path) -> pa.Table:
    return pa.concat_tables(pq.read_table(path) for path in sorted(out.glob("*.parquet")))


def warcio_html_count(path: Path) -> int:
    """HTTP-200 HTML responses counted with warcio, independently of the component (which uses fastwarc)."""
    count = 0
    with open(path, "rb") as file:
        for record in ArchiveIterator(file):
            if record.rec_type != "response" or not record.http_headers:
                continue
            content_type = (record.http_headers.get_header("Content-Type") or "").split(";")[0].strip().lower()
            if record.http_headers.get_statuscode() == "200" and content_type in HTML_TYPES:
                record.raw_stream.read()
                count += record.raw_stream.limit == 0  # a clipped file ends inside the record: no whole page
    return count


@pytest.mark.parametrize("path", sorted(CRAWL.glob("*")), ids=lambda path: path.name)
def test_every_shared_file_keeps_the_html_warcio_counts(tmp_path, path):
    manifest = run(tmp_path, str(path), min_html_bytes=0)
    assert manifest["records"] == warcio_html_count(path)
    assert manifest["sources"][0]["files"][0]["error"] is None


def test_shards_match_the_manifest(tmp_path):
    manifest = run(tmp_path, str(CRAWL / "dolma-sample-0000.warc.gz"), shard_records=5)
    out = tmp_path / "out"
    assert [shard["rows"] for shard in manifest["shards"]] == [5, 5, 5, 5, 2]
    assert sorted(p.name for p in out.glob("*.parquet")) == [shard["name"] for shard in manifest["shards"]]
    for shard in manifest["shards"]:
        path = out / shard["name"]
        assert pq.read_metadata(path).num_rows == shard["rows"]
        assert hashlib.md5(path.read_bytes()).hexdigest() == shard["md5"]
        assert path.stat().st_size == shard["bytes"]
    table = read_rows(out)
    assert table.num_rows == manifest["records"] == 22
    assert str(table.schema.field("fetch_time").type) == "timestamp[us, tz=UTC]"
    assert sum(table["content_length"].to_pylist()) == manifest["html_bytes"]
    assert (out / "manifest.json").read_text().startswith("{\n  \"html_bytes\"")


def test_max_records_stops_reading(tmp_path):
    files = [str(CRAWL / "dolma-sample-0000.warc.gz"), str(CRAWL / "resiliparse-warcfile.warc.gz")]
    manifest = run(tmp_path, *files, max_records=7, shard_records=5)
    assert manifest["records"] == 7
    assert [shard["rows"] for shard in manifest["shards"]] == [5, 2]
    first, second = manifest["sources"]
    assert first["files"][0]["records_read"] < 48  # the file holds 48 records
    assert second["files"] == []


def test_clueweb_japanese_and_declared_charsets(tmp_path):
    pages = [
        ("http://a.example/", "text/html; charset=windows-1252", "<p>café “naïve” – déjà vu</p>".encode("cp1252")),
        ("http://b.example/", "text/html", '<meta charset="shift_jis"><p>日本語のページです</p>'.encode("shift_jis")),
    ]
    write_warc(tmp_path / "made.warc.gz", pages)
    clueweb = str(CRAWL / "resiliparse-clueweb-quirk.warc.gz")
    manifest = run(tmp_path, str(tmp_path / "made.warc.gz"), clueweb, min_html_bytes=0)
    rows = read_rows(tmp_path / "out").to_pylist()
    assert manifest["records"] == len(rows) == 31
    assert rows[0]["html"] == "<p>café “naïve” – déjà vu</p>" and rows[0]["charset"] == "cp1252"
    assert "日本語のページです" in rows[1]["html"] and rows[1]["charset"] == "cp932"
    japanese = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff]")
    assert all(japanese.search(row["html"]) and row["charset"] == "euc_jp" for row in rows[2:])
    assert all(row["fetch_time"] is not None for row in rows[2:])  # from the HTTP Date: ClueWeb's WARC-Date is bad


def test_a_folder_of_saved_html_pages_and_warcs_is_read_as_records(tmp_path):
    dump = tmp_path / "dump"
    (dump / "sub").mkdir(parents=True)
    article = ('<html><head><link rel="canonical" href="https://news.example/a"><title>A</title></head>'
               "<body><p>An article saved from the web.</p></body></html>").encode()
    (dump / "a.html").write_bytes(article)
    latin = '<html><head><meta charset="windows-1252"></head><body><p>café “naïve” – déjà vu</p></body></html>'
    (dump / "sub" / "b.htm.gz").write_bytes(gzip.compress(latin.encode("cp1252")))
    (dump / "tiny.html").write_bytes(b"<p>x</p>")  # under min_html_bytes
    (dump / "notes.txt").write_text("not a page")  # neither WARC nor HTML: not a record file
    write_warc(dump / "sub" / "c.warc.gz", [("http://c.example/", "text/html", b"<p>" + b"from a WARC " * 10 + b"</p>")])
    os.utime(dump / "a.html", (1_600_000_000, 1_600_000_000))

    manifest = run(tmp_path, str(dump))
    files = [Path(f["url"]).name for f in manifest["sources"][0]["files"]]
    assert files == ["a.html", "b.htm.gz", "c.warc.gz", "tiny.html"]
    assert manifest["records"] == 3 and manifest["skipped"] == {"too_small": 1}
    rows = {Path(r["source"]).name: r for r in read_rows(tmp_path / "out").to_pylist()}
    assert rows["a.html"]["url"] == "https://news.example/a"  # the page's own canonical link
    assert rows["a.html"]["fetch_time"].timestamp() == 1_600_000_000  # the file's modification time
    assert rows["a.html"]["payload_digest"] == payload_digest(article)
    assert rows["b.htm.gz"]["url"] == (dump / "sub" / "b.htm.gz").resolve().as_uri()  # no URL of its own
    assert rows["b.htm.gz"]["charset"] == "cp1252" and "café “naïve” – déjà vu" in rows["b.htm.gz"]["html"]
    assert rows["c.warc.gz"]["url"] == "http://c.example/"
    # The same folder ingested again gives the same record ids (derived from the file's URL).
    again = run(tmp_path / "again", str(dump))
    assert again["records"] == 3
    assert {r["record_id"] for r in read_rows(tmp_path / "again" / "out").to_pylist()} == {
        r["record_id"] for r in rows.values()}


def test_the_annotated_html_pages_of_the_tiny_preset_are_all_records(tmp_path):
    manifest = run(tmp_path, str(CRAWL.parent / "html" / "trafilatura-eval" / "html"))
    assert manifest["records"] == 166 and manifest["skipped"] == {}
    urls = read_rows(tmp_path / "out")["url"].to_pylist()
    # 151 pages name their URL (canonical link or og:url); the others keep their file:// URL.
    assert sum(u.startswith("https://") or u.startswith("http://") for u in urls) > 140
    assert all(u.startswith(("http://", "https://", "file:///")) for u in urls)


def test_computed_payload_digest_matches_common_crawl(tmp_path):
    with open(CRAWL / "whirlwind-whirlwind.warc.gz", "rb") as file:
        response = next(record for record in ArchiveIterator(file) if record.rec_type == "response")
        assert payload_digest(response.raw_stream.read()) == response.rec_headers["WARC-Payload-Digest"]


def test_garbage_file_is_counted_not_raised(tmp_path):
    (tmp_path / "x.warc.gz").write_bytes(os.urandom(20_000))
    manifest = run(tmp_path, str(tmp_path / "x.warc.gz"))
    assert manifest["records"] == 0 and manifest["shards"] == []
    assert manifest["skipped"] == {"unreadable_file": 1}
    assert manifest["sources"][0]["files"][0]["error"]
    assert (tmp_path / "out" / "manifest.json").exists()


def test_uri_matching_nothing_raises(tmp_path):
    uri = str(tmp_path / "nothing-*.warc.gz")
    with pytest.raises(SourceNotFound, match=re.escape(uri)):
        run(tmp_path, uri)


def test_s3_glob(tmp_path, monkeypatch):
    boto3 = pytest.importorskip("boto3")
    from moto.server import ThreadedMotoServer

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        endpoint = "http://{}:{}".format(*server.get_host_and_port())
        s3 = boto3.client("s3", endpoint_url=endpoint)
        s3.create_bucket(Bucket="crawl")
        for name in ("whirlwind-whirlwind.warc.gz", "warcio-example.warc.gz", "whirlwind-whirlwind.warc.wet.gz"):
            s3.upload_file(str(CRAWL / name), "crawl", f"warc/{name}")
        manifest = run(tmp_path, "s3://crawl/warc/*.warc.gz", s3=S3Options(endpoint_url=endpoint))
        with pytest.raises(SourceNotFound):
            run(tmp_path / "none", "s3://crawl/other/*.warc.gz", s3=S3Options(endpoint_url=endpoint))
    finally:
        server.stop()
    urls = [file["url"] for file in manifest["sources"][0]["files"]]
    assert urls == ["s3://crawl/warc/warcio-example.warc.gz", "s3://crawl/warc/whirlwind-whirlwind.warc.gz"]
    assert manifest["records"] == 2


@pytest.fixture
def http_root(tmp_path):
    """A loopback HTTP server over a temp folder (plain GETs, no range support, like the worst real server)."""
    root = tmp_path / "www"
    root.mkdir()
    quiet = type("Quiet", (http.server.SimpleHTTPRequestHandler,), {"log_message": lambda *args: None})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(quiet, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_commoncrawl_and_https_sources(tmp_path, http_root, monkeypatch):
    root, base = http_root
    monkeypatch.setenv("LLM_LIFECYCLE_COMMONCRAWL_URL", base)
    crawl = root / "crawl-data" / "CC-MAIN-TEST"
    crawl.mkdir(parents=True)
    names = ["resiliparse-warcfile.warc.gz", "dolma-sample-0000.warc.gz"]
    for name in names:
        shutil.copy(CRAWL / name, crawl / name)
    listing = "".join(f"crawl-data/CC-MAIN-TEST/{name}\n" for name in names)
    (crawl / "warc.paths.gz").write_bytes(gzip.compress(listing.encode()))

    single_url = f"{base}/crawl-data/CC-MAIN-TEST/dolma-sample-0000.warc.gz"
    manifest = run(tmp_path, "commoncrawl://CC-MAIN-TEST", single_url, commoncrawl_files=1)
    commoncrawl, single = manifest["sources"]
    assert [file["url"] for file in commoncrawl["files"]] == [f"{base}/crawl-data/CC-MAIN-TEST/{names[0]}"]
    assert [file["kept"] for file in commoncrawl["files"] + single["files"]] == [16, 22]

    with pytest.raises(SourceNotFound, match="CC-MAIN-NOPE"):
        run(tmp_path / "a", "commoncrawl://CC-MAIN-NOPE")
    with pytest.raises(SourceNotFound, match="missing.warc.gz"):
        run(tmp_path / "b", f"{base}/missing.warc.gz")


def test_unreachable_server_raises_a_retryable_error(tmp_path):
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(OSError):
        run(tmp_path, f"http://127.0.0.1:{port}/unreachable.warc.gz")


def write_warc(path: Path, pages: list[tuple[str, str, bytes]]) -> None:
    with open(path, "wb") as file:
        writer = WARCWriter(file, gzip=True)
        for url, content_type, body in pages:
            headers = StatusAndHeaders("200 OK", [("Content-Type", content_type)], protocol="HTTP/1.1")
            record = writer.create_warc_record(url, "response", payload=io.BytesIO(body), http_headers=headers)
            writer.write_record(record)
