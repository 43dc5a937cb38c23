"""Cleaning filters on real pages from ../shared/data: annotated pages of html/trafilatura-eval (must-contain and
must-not-contain snippets per page) and crawled pages from crawl/*.warc (read with components.ingest)."""
from __future__ import annotations

import functools
import gzip
import json
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from components.clean.doc import Doc
from components.clean.extract import Extract, ExtractParams
from components.clean.heuristics import (
    LDNOOBW_DIR,
    UNSEGMENTED,
    C4BadWords,
    C4BadWordsParams,
    C4Quality,
    C4QualityParams,
    FineWebQuality,
    GopherQuality,
    GopherQualityParams,
    GopherRepetition,
    read_badwords,
)
from components.clean.langid import LanguageId, LanguageIdParams
from components.clean.urlfilter import UrlFilter, UrlFilterParams
from components.ingest import CrawlParams, Source, ingest

EXTRACTORS = ["trafilatura", "resiliparse"]
BBC = "bbc.com.52241221.html.gz"  # a news article: clean prose, the page any filter should keep


@pytest.fixture(scope="module")
def eval_dir(data_dir) -> Path:
    return data_dir / "html" / "trafilatura-eval"


@functools.cache
def annotations(eval_dir: Path) -> dict[str, dict]:
    """evaldata_en.json by file name: url, "with" (snippets of the main text), "without" (boilerplate)."""
    entries = json.loads((eval_dir / "evaldata_en.json").read_text())
    return {entry["file"]: {**entry, "url": url} for url, entry in entries.items()}


def eval_page(eval_dir: Path, name: str) -> Doc:
    html = gzip.decompress((eval_dir / "html" / name).read_bytes()).decode("utf-8", errors="replace")
    return Doc(id=name, text="", source="crawl", url=annotations(eval_dir)[name]["url"], meta={"html": html})


def extracted(eval_dir: Path, name: str, extractor: str = "trafilatura") -> Doc:
    doc = eval_page(eval_dir, name)
    assert Extract(ExtractParams(extractor=extractor))(doc) is None
    return doc


@pytest.fixture(scope="module")
def crawl(data_dir, tmp_path_factory) -> dict[str, str]:
    """HTML by URL of the crawled pages used below, ingested as the pipeline does."""
    names = ["dolma-sample-0000.warc.gz", "resiliparse-clueweb-quirk.warc.gz", "resiliparse-warcfile.warc.gz",
             "warcio-example.warc.gz"]
    out = tmp_path_factory.mktemp("crawl")
    ingest(CrawlParams(sources=[Source(uri=str(data_dir / "crawl" / n)) for n in names]), out, progress=False)
    rows = [row for shard in sorted(out.glob("*.parquet")) for row in pq.read_table(shard).to_pylist()]
    return {row["url"]: row["html"] for row in rows}


def crawl_doc(crawl: dict[str, str], url: str, extractor: str = "trafilatura") -> Doc:
    doc = Doc(id=url, text="", source="crawl", url=url, meta={"html": crawl[url]})
    Extract(ExtractParams(extractor=extractor))(doc)
    return doc


# -- url ---------------------------------------------------------------------------------------------------------


def test_blocklist_matches_subdomains_but_not_look_alikes(tmp_path):
    user_list = tmp_path / "blocklist.txt"
    user_list.write_text("# a user's own list\nexample.com\niana.org/domains/  # one section of a site\n")
    url_filter = UrlFilter(UrlFilterParams(blocklist_file=user_list))
    assert url_filter(Doc(id="1", text="", source="crawl", url="http://example.com/")) == "blocked_domain"
    assert url_filter(Doc(id="2", text="", source="crawl", url="https://WWW.Example.COM:443/x")) == "blocked_domain"
    # A listed domain is a suffix of labels, not of characters: notexample.com is someone else's site.
    assert url_filter(Doc(id="3", text="", source="crawl", url="http://notexample.com/")) is None
    assert url_filter(Doc(id="4", text="", source="crawl", url="http://example.com.evil.net/")) is None
    assert url_filter(Doc(id="5", text="", source="crawl", url="http://www.iana.org/domains/reserved")) == "blocked_url"
    assert url_filter(Doc(id="6", text="", source="crawl", url="http://www.iana.org/")) is None
    # The built-in list is on too: a gambling site's mobile subdomain.
    assert url_filter(Doc(id="7", text="", source="crawl", url="https://m.bet365.com/sports")) == "blocked_domain"


def test_default_blocklist_keeps_every_crawled_page(crawl):
    url_filter = UrlFilter()
    assert [url for url in crawl if url_filter(Doc(id=url, text="", source="crawl", url=url))] == []


# -- extract -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("extractor", EXTRACTORS)
@pytest.mark.parametrize("name", [BBC, "nature.com.telescope.html.gz", "0a3108e507c54157a95fe7a1338f5e9c.html.gz"])
def test_extraction_keeps_the_article_and_drops_the_boilerplate(eval_dir, name, extractor):
    # Pages where both extractors get every annotation right; the last one has a cookie banner ("Privacy &
    # Cookies: This site uses...") and an ad-blocker notice, both annotated as must-not-contain.
    doc = extracted(eval_dir, name, extractor)
    expected = annotations(eval_dir)[name]
    assert [s for s in expected["with"] if s not in doc.text] == []
    assert [s for s in expected["without"] if s in doc.text] == []
    assert "html" not in doc.meta  # freed once extracted
    assert doc.meta["title"] and "<" not in doc.meta["title"]


@pytest.mark.parametrize("extractor", EXTRACTORS)
def test_page_without_main_text_is_removed(extractor):
    # A redirect stub, of which crawls hold many: a title and a refresh, no text (the full-mode retry finds none).
    html = ('<html><head><title>Moved</title><meta http-equiv="refresh" content="0; url=https://example.org/new">'
            "</head><body></body></html>")
    doc = Doc(id="stub", text="", source="crawl", url="https://example.org/old", meta={"html": html})
    assert Extract(ExtractParams(extractor=extractor))(doc) == "no_text"
    assert doc.text == "" and "html" not in doc.meta


def test_fast_extraction_that_finds_almost_nothing_is_retried_in_full_mode(eval_dir):
    # Fast mode keeps only a caption (< 250 chars) of this slideshow page and none of its annotated main text;
    # the full mode's fallback extractors find the article. The default retries, and gets the full mode's text.
    name = "economictimes.indiatimes.com.slideshow.html.gz"
    expected = annotations(eval_dir)[name]["with"]
    texts = {}
    for label, params in {"fast": ExtractParams(retry_below_chars=None), "full": ExtractParams(fast=False),
                          "default": ExtractParams()}.items():
        doc = eval_page(eval_dir, name)
        Extract(params)(doc)
        texts[label] = doc.text
    assert len(texts["fast"]) < 250 and not any(s in texts["fast"] for s in expected)
    assert texts["default"] == texts["full"] and any(s in texts["default"] for s in expected)


def test_trafilatura_extracts_less_boilerplate_than_resiliparse(eval_dir):
    # Resiliparse keeps The Verge's cookie banner ("We use cookies and other tracking technologies ..."),
    # trafilatura drops it with the rest of the page chrome.
    traf = extracted(eval_dir, "theverge.com.ios13.html.gz", "trafilatura").text
    resi = extracted(eval_dir, "theverge.com.ios13.html.gz", "resiliparse").text
    assert "We use cookies" in resi and "We use cookies" not in traf


# -- language ----------------------------------------------------------------------------------------------------


def test_language_of_an_english_article(eval_dir):
    doc = extracted(eval_dir, BBC)
    assert LanguageId()(doc) is None
    assert doc.meta["language"] == "en" and doc.meta["language_score"] > 0.9


def test_japanese_clueweb_page_is_not_in_languages(crawl):
    # A 2009 Japanese shop page (EUC-JP): trafilatura finds no article in its table layout, resiliparse
    # keeps the shop's tag line, which is enough to tell Japanese.
    url = next(url for url in crawl if "uraharajuku.st" in url)
    doc = crawl_doc(crawl, url, "resiliparse")
    assert LanguageId()(doc) == "not_in_languages"
    assert doc.meta["language"] == "ja"
    assert LanguageId(LanguageIdParams(languages=["en", "ja"]))(doc) is None


def test_a_date_alone_is_low_confidence():
    # With favor_precision (the old default here), trafilatura's whole extract of a Google security blog post was
    # its date line: no language to speak of.
    doc = Doc(id="date", text="May 19, 2020", source="crawl")
    assert LanguageId()(doc) == "low_confidence" and doc.meta["language_score"] < 0.65


# -- gopher quality ----------------------------------------------------------------------------------------------


def test_gopher_quality_keeps_an_article_and_removes_a_stub(eval_dir, crawl):
    assert GopherQuality()(extracted(eval_dir, BBC)) is None
    # example.com's page is two sentences (26 words): under Gopher's 50-word minimum.
    assert GopherQuality()(crawl_doc(crawl, "http://example.com/")) == "min_doc_words"
    # Without that rule, its third line, the link "More information...", ends in an ellipsis: 1 line in 3 > 0.3.
    without_minimum = GopherQuality(GopherQualityParams(min_doc_words=None))
    assert without_minimum(crawl_doc(crawl, "http://example.com/")) == "max_ellipsis_lines_ratio"


def test_gopher_stop_words_reject_text_that_is_not_english(crawl):
    # A Russian company page: long enough, but none of "the, be, to, of, and, that, have, with".
    assert GopherQuality()(crawl_doc(crawl, "http://01spb.ru/company/")) == "min_stop_words"


# -- gopher repetition -------------------------------------------------------------------------------------------


def test_gopher_repetition_removes_a_page_of_repeated_lines(eval_dir, crawl):
    assert GopherRepetition()(extracted(eval_dir, BBC)) is None
    # A publication list: every entry ends with the same "Article" and "Code" link lines.
    doc = crawl_doc(crawl, "https://dwadden.github.io/")
    assert doc.text.count("\nArticle\n") > 10
    assert GopherRepetition()(doc) == "dup_line_frac"


# -- c4 ----------------------------------------------------------------------------------------------------------


def test_c4_drops_a_cookie_line_and_keeps_the_article(eval_dir):
    doc = extracted(eval_dir, "theverge.com.ios13.html.gz", "resiliparse")
    cookie_line = next(line for line in doc.text.splitlines() if "We use cookies" in line)
    assert C4Quality()(doc) is None
    assert cookie_line.strip() not in doc.text  # "use cookies" is one of C4's policy phrases
    assert "FaceTime" in doc.text  # the article itself stays


def test_c4_drops_every_line_that_mentions_javascript(eval_dir):
    # C4's rule is blunt: it targets "enable JavaScript" notices but also drops this interview's own line.
    doc = extracted(eval_dir, "blog.amp.dev.axios.html.gz")
    line = next(line for line in doc.text.splitlines() if "inline JavaScript" in line)
    assert C4Quality()(doc) is None and line not in doc.text
    kept = extracted(eval_dir, "blog.amp.dev.axios.html.gz")
    assert C4Quality(C4QualityParams(filter_javascript=False))(kept) is None and line in kept.text


def test_c4_removes_lorem_ipsum_and_short_pages(eval_dir, crawl):
    # A surf shop's unconfigured cookie bar still holds its template's "Lorem ipsum" text.
    assert C4Quality()(extracted(eval_dir, "pointofsail-kiel.de.wilson.html.gz", "resiliparse")) == "lorem_ipsum"
    assert C4Quality()(crawl_doc(crawl, "http://example.com/")) == "too_few_sentences"


# -- c4 bad words ------------------------------------------------------------------------------------------------


def in_language(text: str, language: str) -> Doc:
    return Doc(id=text[:20], text=text, source="crawl", meta={"language": language})


def test_c4_badwords_removes_a_page_with_one_listed_word(eval_dir):
    badwords = C4BadWords()
    article = extracted(eval_dir, BBC)
    article.meta["language"] = "en"
    assert badwords(article) is None
    # A music review that quotes one swear word in 2,000 characters: C4 drops the whole page for it.
    review = extracted(eval_dir, "tonedeaf.thebrag.com.luboku.html.gz")
    review.meta["language"] = "en"
    assert badwords(review) == "badwords_en"
    review.meta["language"] = "de"  # the English list applies to English documents only
    assert badwords(review) is None


def test_c4_badwords_match_whole_words_in_english_and_c4s_own_list():
    badwords = C4BadWords()
    # Listed words inside longer words do not count: "ass" in class, "cock" in cocktail, "cunt" in Scunthorpe.
    assert badwords(in_language("The class assumes a Scunthorpe cocktail recipe.", "en")) is None
    assert badwords(in_language("What an ASS!", "en")) == "badwords_en"  # the text is lower-cased first
    assert badwords(in_language("two girls one cup", "en")) == "badwords_en"  # phrases too
    # C4 read the 2016 English list: "sexual" entered LDNOOBW later, so an article about harassment stays.
    assert badwords(in_language("A report on sexual harassment at work.", "en")) is None


def test_c4_badwords_match_anywhere_in_languages_written_without_spaces():
    badwords = C4BadWords(C4BadWordsParams(languages=["en", "ja", "zh"]))
    assert badwords(in_language("これはアナルの話です", "ja")) == "badwords_ja"
    # Subwords C4 allows because each alone removes over 10% of its language's pages ("girl", "sex/nature").
    assert badwords(in_language("かわいい女の子がいます", "ja")) is None
    assert badwords(in_language("这是一个性能测试", "zh")) is None
    assert badwords(in_language("Une page en français, merde.", "fr")) is None  # French is not listed here


@pytest.mark.parametrize("language", ["en", "fr", "ja", "zh"])
def test_c4_badwords_trie_regex_matches_what_c4s_flat_regex_matches(language):
    # C4's own pattern (tfds c4_utils.get_badwords_filter_fn), against ours on every list entry in contexts that
    # must and must not match: inside longer words, cut short, at the text's ends, around punctuation.
    words = read_badwords(LDNOOBW_DIR, language)
    alternation = "|".join(re.escape(w) for w in words)
    c4 = re.compile(alternation if language in UNSEGMENTED else rf"(?:\W|^)({alternation})(?:\W|$)")
    ours = C4BadWords(C4BadWordsParams(languages=[language])).patterns[language]
    texts = [t for w in sorted(words) for t in (w, w[:-1], f"x{w}", f"{w}s", f"a {w}.", f"({w})", f"{w[1:]} {w[0]}")]
    assert [t for t in texts if bool(c4.search(t)) != bool(ours.search(t))] == []


def test_c4_badwords_read_the_lists_named_in_params(tmp_path):
    (tmp_path / "en.txt").write_text("llama\n\n")  # an empty line must not match everything
    badwords = C4BadWords(C4BadWordsParams(lists_dir=tmp_path))
    assert badwords(in_language("Llamas are fine.", "en")) is None
    assert badwords(in_language("A llama, really.", "en")) == "badwords_en"
    with pytest.raises(ValueError, match="no bad-words list for language 'de'.*available: en"):
        C4BadWordsParams(lists_dir=tmp_path, languages=["de"])


# -- fineweb -----------------------------------------------------------------------------------------------------


def test_fineweb_keeps_an_article_and_removes_a_list_of_names(eval_dir, crawl):
    assert FineWebQuality()(extracted(eval_dir, BBC)) is None
    # A research team page: names and affiliations, one per line, almost none ending in punctuation.
    team = crawl_doc(crawl, "https://www.semanticscholar.org/research/research-team")
    assert FineWebQuality()(team) == "line_punct_ratio"


def test_disabled_filters_keep_everything(crawl):
    doc = crawl_doc(crawl, "http://example.com/")
    for step in (GopherQuality(GopherQualityParams(enabled=False)), C4Quality(C4QualityParams(enabled=False))):
        assert step(doc) is None
