"""Curated sources on the real public files in ../shared/data/curated: every format, ids, params, HTTP."""
from __future__ import annotations

import functools
import http.server
import os
import threading
from pathlib import Path

import pytest
from pydantic import ValidationError

from components.curated import CuratedParams, CuratedSource, SourceNotFound, read_curated, read_source

REPO = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("LLM_LIFECYCLE_DATA_DIR", REPO.parent / "shared" / "data")).resolve()
CURATED = DATA / "curated"
pytestmark = pytest.mark.skipif(not CURATED.is_dir(), reason=f"test data not found at {CURATED}")


def read(path: str, format: str, domain: str | None = "reference", **options) -> list:
    uri = path if "://" in path else str(CURATED / path)
    return list(read_source(CuratedSource(name="src", uri=uri, format=format, domain=domain, **options)))


def test_gutenberg_books_lose_the_license_header_and_footer():
    books = read("gutenberg/pg*.txt", "gutenberg", "fiction")
    assert len(books) == 6  # pg11, pg1342, pg1661, pg2701, pg84, pg98 in name order
    alice = books[0].text
    assert alice.startswith("ALICE’S ADVENTURES IN WONDERLAND\n\nLewis Carroll")
    assert alice.endswith("THE END")
    for book in books:
        assert "*** START" not in book.text and "*** END" not in book.text and "Produced by" not in book.text[:500]
        assert "Project Gutenberg License" not in book.text and "End of Project Gutenberg" not in book.text


def test_split_chars_cuts_books_at_paragraph_boundaries():
    whole = read("gutenberg/pg*.txt", "gutenberg", "fiction")
    chunks = read("gutenberg/pg*.txt", "gutenberg", "fiction", split_chars=5000)
    assert len(chunks) == 711
    # Nothing lost, nothing cut inside a paragraph:
    assert "\n\n".join(c.text for c in chunks) == "\n\n".join(b.text for b in whole)
    assert sum(len(c.text) >= 5000 for c in chunks) >= len(chunks) - len(whole)  # only each book's last is short
    assert max(len(c.text) for c in chunks) < 10_000


def test_wikitext_is_one_detokenized_document_per_article():
    articles = read("wikitext-2/valid.txt", "wikitext")
    assert len(articles) == 60
    lobster = articles[0].text
    assert lobster.startswith("Homarus gammarus\n\nHomarus gammarus, known as the European lobster")
    assert "\n\nDescription\n\n" in lobster  # " = = Description = = " became a plain heading
    assert "weigh 0.7 – 2.2 kg (1.5 – 4.9 lb)" in lobster
    assert articles[2].text.startswith("M-82 (Michigan highway)\n\nM-82 is a state trunkline")
    text = "\n".join(article.text for article in articles)
    for token in (" @-@ ", " @,@ ", " @.@ ", " , ", " . ", " 's ", "( ", " )", "\n="):
        assert token not in text


def test_lines_and_jsonl_sources():
    wiki = read("llamafactory-demo/wiki_demo.txt", "lines")
    assert len(wiki) == 30 and wiki[0].text.startswith("Anarchism is a political philosophy")
    c4 = read("llamafactory-demo/c4_demo.jsonl", "jsonl", None)
    assert len(c4) == 300 and c4[0].text.startswith("Don’t think you need all the bells and whistles?")
    dolma = read("web-docs/dolma-tests/*.jsonl.gz", "jsonl", None)  # gzip inferred from the name
    assert len(dolma) == 20 and dolma[0].text.startswith("We will be starting to hold weekly teleconferences")


def test_zip_speeches_are_one_document_each_and_legacy_encodings_are_repaired():
    speeches = read("nltk/*.zip", "zip_txt", "other")
    assert len(speeches) == 59 + 65  # inaugural.zip, then state_union.zip
    assert speeches[0].text.startswith("Fellow-Citizens of the Senate and of the House of Representatives:")
    assert speeches[59].text.startswith("PRESIDENT HARRY S. TRUMAN'S ADDRESS BEFORE A JOINT SESSION")
    text = "".join(speech.text for speech in speeches)
    assert "\ufffd" not in text and "¡¦" not in text and "\u3000" not in text
    assert "man’s genius" in text  # Big5 quotes in 1970-Nixon.txt
    assert "½¢" in text  # Windows-1252 in 1954-Eisenhower.txt


def test_text_source_is_one_document_or_chunks():
    (play,) = read("tinyshakespeare/input.txt", "text", "fiction")
    assert play.text.startswith("First Citizen:\nBefore we proceed any further, hear me speak.")
    assert len(play.text) > 1_100_000
    chunks = read("tinyshakespeare/input.txt", "text", "fiction", split_chars=5000)
    assert len(chunks) == 216 and "\n\n".join(c.text for c in chunks) == play.text


def test_documents_carry_ids_source_and_domain():
    params = CuratedParams(sources=[
        CuratedSource(name="wikipedia", uri=str(CURATED / "llamafactory-demo/wiki_demo.txt"), format="lines",
                      domain="reference", max_docs=3),
        CuratedSource(name="c4", uri=str(CURATED / "llamafactory-demo/c4_demo.jsonl"), format="jsonl", domain=None,
                      max_docs=2),
    ])
    docs = list(read_curated(params))
    assert [doc.id for doc in docs] == ["wikipedia/0", "wikipedia/1", "wikipedia/2", "c4/0", "c4/1"]
    assert docs[0].source == "wikipedia" and docs[0].url is None and docs[0].meta == {"domain": "reference"}
    assert docs[3].meta == {}  # mixed web text: the domain step decides
    docs[0].meta["x"] = 1
    assert "x" not in docs[1].meta  # each document owns its meta


def test_params_are_validated_and_mapped_to_the_data_dir():
    base = {"name": "books", "uri": "https://example.org/pg11.txt", "format": "gutenberg", "domain": "fiction"}
    with pytest.raises(ValidationError, match="unknown domain 'novels'"):
        CuratedSource(**{**base, "domain": "novels"})
    with pytest.raises(ValidationError, match="Extra inputs"):
        CuratedSource(**base, split_char=10)
    with pytest.raises(ValidationError, match="split_chars applies to formats"):
        CuratedSource(**{**base, "format": "jsonl"}, split_chars=5000)
    with pytest.raises(ValidationError, match="unique"):
        CuratedParams(sources=[base, base])
    params = CuratedParams(sources=[{**base, "offline": "curated/gutenberg/pg11.txt", "split_chars": 5000}])
    local = params.for_data_dir(DATA).sources[0]
    assert isinstance(local, CuratedSource) and local.uri == str(DATA / "curated/gutenberg/pg11.txt")
    assert local.split_chars == 5000 and params.for_data_dir(None) == params
    assert len(list(read_curated(params.for_data_dir(DATA)))) == 29


def test_bad_sources_fail_with_the_file_named():
    with pytest.raises(SourceNotFound):
        read("nope/*.txt", "text")
    with pytest.raises(ValueError, match=r"input\.txt.*no '\*\*\* START OF"):
        read("tinyshakespeare/input.txt", "gutenberg")


@pytest.fixture
def http_base():
    """A loopback HTTP server over the curated folder (plain GETs, no range requests)."""
    quiet = type("Quiet", (http.server.SimpleHTTPRequestHandler,), {"log_message": lambda *args: None})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(quiet, directory=str(CURATED)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_http_sources_stream_through_fsspec(http_base):
    dolma = read(f"{http_base}/web-docs/dolma-tests/cc_en_head-0091.jsonl.gz", "jsonl", None)
    assert [d.text for d in dolma] == [d.text for d in read("web-docs/dolma-tests/cc_en_head-0091.jsonl.gz", "jsonl")]
    (alice,) = read(f"{http_base}/gutenberg/pg11.txt", "gutenberg", "fiction")
    assert alice.text == read("gutenberg/pg11.txt", "gutenberg", "fiction")[0].text
