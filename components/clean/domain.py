"""Domain labels from transparent rules on the URL and the text; the mix stage weights domains with them.

Precedence, first match wins:
  1. a curated document's declared domain (meta["domain"], set by its source in params.yaml);
  2. URL rules, in URL_RULES order: the host and path are the publisher's own statement of what a page is;
  3. text rules, in TEXT_RULES order: code (syntax is unmistakable), forum and selling boilerplate, a news
     dateline or reporting language, fiction's dialogue, reference headings or an encyclopedic opening;
  4. "other".
The text rules are tuned for precision: a page they are unsure of stays "other". Only the first MAX_CHARS
characters are read: a few regex scans per document, cheap at crawl scale.

domain_sample.jsonl (next to this file) measures the rules: 81 real documents (the shared crawl, C4 and dolma
web text, Wikipedia, trafilatura's evaluation pages), first 1,500 characters, each labelled by hand by reading
it and picking the DOMAINS definition that fits what the page *is*, whatever its URL says (a /news/ page that
is mostly a comment thread is "forum"); a mixed page gets the domain of its main text; url is null where the
source has none (C4, wiki_demo). The rules were drafted before labelling (38% on the sample) and then tuned on
it, checking each change on ~400 unlabelled pages for false positives: the 73% they reach is optimistic.
"""
from __future__ import annotations

import re
from urllib.parse import urlsplit

from components.clean.doc import Doc, Filter

DOMAINS = {
    "reference": "explains a topic for lookup: encyclopedia, wiki, dictionary, textbook, scholarly article",
    "news": "reports or comments on current events: news articles, press releases, news-outlet opinion",
    "forum": "people talking to each other: forum threads, Q&A sites, comment sections, social posts",
    "fiction": "invented narrative or verse: novels, stories, drama, poetry, lyrics",
    "code": "source code, or software text where code and commands are central (docs, tutorials, repos)",
    "commerce": "sells something: product, shop and listing pages, service adverts, prices",
    "other": "everything else: personal and organisation pages, blogs, how-to, recipes, speeches, spam",
}
MAX_CHARS = 5000

# (domain, rule name, pattern on "host/path" with the host lower-cased and "www." removed)
URL_RULES = [
    ("forum", "forum_host", r"^([^/]*\.)?(reddit\.com|stackexchange\.com|stackoverflow\.com|quora\.com)/"),
    ("forum", "forum_path", r"/(forums?|threads?|viewtopic|showthread|discussions?|questions)\b"),
    ("code", "code_host", r"^(github\.com|gitlab\.com|bitbucket\.org|pypi\.org|npmjs\.com|[^/]*readthedocs\.io)/"),
    ("code", "docs_host", r"^(docs|developer|developers)\.[^/]+/"),
    ("reference", "wiki", r"^[^/]*(wikipedia|wiktionary|wikisource|wiki)\.|/wiki/"),
    ("reference", "reference_host", r"^[^/]*(encyclopedia|britannica|dictionary|academic|glossary)[^/]*/"),
    ("reference", "doi", r"/(doi/)?10\.\d{4,}/"),  # scholarly articles are addressed by DOI
    ("fiction", "fiction_path", r"/(fiction|fanfic|poems?|poetry|lyrics)/|^[^/]*(fanfiction|lyrics)"),
    ("commerce", "shop_path",
     r"(^|[./-])(shop|store|cart|checkout)s?([./-]|$)|/(products?|order|price|buy|deals?)([/.-]|$)"),
    ("news", "news_path", r"^[^/]*news|/news/"),
    ("news", "news_host", r"^[^/]*(times|herald|tribune|gazette|chronicle|dailymail|reuters|bbc|cnn)\b"),
]
URL_PATTERNS = [(domain, rule, re.compile(pattern)) for domain, rule, pattern in URL_RULES]

# Code survives text extraction as calls, assignments, operators, shell prompts and file names, even when
# the extractor flattens its lines into a table or a paragraph.
CODE_TOKEN = re.compile(
    r"\w\(\)|\w\([\w\"'., =]*\)|\b\w+ = [\w\"'\[{(]|[{};]\s*$|^\s*(#|//|\$|>>>) |==|!=|->|<-|\+=|&&|\|\||::|"
    r"\b(def|import|return|elif|lambda|function|var|const|sudo|pip|npm|apt-get|git|printf?|self|null|None)\b|"
    r"\.(py|js|sh|json|ya?ml|conf|md)\b|\s--\w", re.MULTILINE)
PROGRAMMING_WORD = re.compile(
    r"\b(python|javascript|java|c\+\+|rust|ruby|lisp|emacs|vim|tmux|bash|shell|docker(file)?|linux|git|compiler|"
    r"interpreter|function|variable|module|library|api|command line|terminal|script|syntax|repository|install)\b",
    re.IGNORECASE)
FORUM_CUE = re.compile(r"\b(Thread|threads|Replies|Reply|Quote|Posted by|Joined|Re:|forums?|moderator|upvotes?|"
                       r"wrote:|your post)|(^|\s)@\w+", re.MULTILINE)
# Selling language; prices alone are not enough (news and reviews quote them too).
SELLING_CUE = re.compile(
    r"\b(add to (cart|basket|bag)|buy now|in stock|free shipping|checkout|order (now|online|today)|for sale|"
    r"to rent|for rent|we offer|offers? (a|an)? ?(wide|full|variety|range)|our (most popular|products|services|"
    r"customers|clients|range)|contact us|call us|(get|request) a (free )?quote|best quality|warranty|affordable)\b",
    re.IGNORECASE)
PRICE = re.compile(r"[$€£¥]\s?\d|\d\s?(USD|EUR|円|元)")
# "WASHINGTON —", "KOBE – A", "HOUSTON, Texas (KTRK) -- A", "TORONTO, Dec. 19, 2018 (GLOBE NEWSWIRE) -- Wayland"
DATELINE = re.compile(r"^[A-Z][A-Z .'-]{2,30}(,[^\n]{0,40}?)?\s*(\([^)\n]{2,40}\))?\s*[—–-]{1,2}\s+[A-Z][a-z ]|"
                      r"\((AP|Reuters|AFP|CNN)\)", re.MULTILINE)
# Reporting language (who said or announced what), and the weekday it happened on.
REPORTING = re.compile(r"\b(according to|announced|officials?|spokes(man|woman|person)|told (reporters|media)|"
                       r"said|says)\b")
WEEKDAY = re.compile(r"\b(Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)\b")
DIALOGUE = re.compile(r"[\"“”]")
SPEECH_VERB = re.compile(r"\b(said|asked|cried|replied|whispered|exclaimed)\b")
FICTION_CUE = re.compile(r"\b(short story|chapter (\d+|one)|prologue|once upon a time|fan ?fiction)\b", re.IGNORECASE)
DEFINITION = re.compile(r"^[^.\n]{1,100}?\b((is|are|was|were) (a|an|the|one of|any of)|refers to|is defined as|"
                        r"(also|commonly|popularly) known as)\b")
# A heading on its own line ("Abstract"), or a dictionary field anywhere ("ETYMOLOGY: ...").
REFERENCE_HEADING = re.compile(r"^(Abstract|Definition|Etymology|Pronunciation|Meaning|Background)\b|"
                               r"\b(abstract|definition|etymology|pronunciation|meaning):",
                               re.MULTILINE | re.IGNORECASE)
FIRST_SECOND_PERSON = re.compile(r"\b(I|me|my|we|our|you|your)\b", re.IGNORECASE)


def looks_like_code(text: str) -> bool:
    """Dense code syntax, or some code in text about programming."""
    tokens = len(CODE_TOKEN.findall(text))
    dense = tokens >= 3 and tokens >= 3.5 * len(text) / 1000
    return dense or (tokens >= 1 and len(PROGRAMMING_WORD.findall(text)) >= 6)


def looks_like_forum(text: str) -> bool:
    return len(FORUM_CUE.findall(text)) >= 3


def looks_like_commerce(text: str) -> bool:
    selling = len(SELLING_CUE.findall(text))
    return selling >= 2 or (selling >= 1 and len(PRICE.findall(text)) >= 2)


def looks_like_news(text: str) -> bool:
    """A dateline, or reporting language."""
    reporting = len(REPORTING.findall(text))
    return bool(DATELINE.search(text[:300])) or (reporting >= 2 and reporting + len(WEEKDAY.findall(text)) >= 3)


def looks_like_fiction(text: str) -> bool:
    """Dense dialogue (news quotes people too, but rarely this densely), or a story announcing itself."""
    quotes_per_kchar = 1000 * len(DIALOGUE.findall(text)) / max(len(text), 1)
    dialogue = quotes_per_kchar >= 4 and len(SPEECH_VERB.findall(text)) >= 3
    return dialogue or bool(FICTION_CUE.search(text[:1000]))


def looks_like_reference(text: str) -> bool:
    """Reference headings (Abstract, Definition, ...), or an encyclopedic "X is ..." opening in an impersonal voice."""
    if REFERENCE_HEADING.search(text[:1000]):
        return True
    words = max(len(text.split()), 1)
    impersonal = len(FIRST_SECOND_PERSON.findall(text)) / words < 0.005
    return impersonal and bool(DEFINITION.match(text.lstrip()))


TEXT_RULES = [
    ("code", "code_tokens", looks_like_code),
    ("forum", "forum_cues", looks_like_forum),
    ("commerce", "commerce_cues", looks_like_commerce),
    ("news", "news_cues", looks_like_news),
    ("fiction", "fiction_cues", looks_like_fiction),
    ("reference", "reference_cues", looks_like_reference),
]


def classify(url: str | None, text: str) -> tuple[str, str]:
    """(domain, the rule that decided it), e.g. ("reference", "url:wiki")."""
    if url:
        target = url_target(url)
        for domain, rule, pattern in URL_PATTERNS:
            if pattern.search(target):
                return domain, f"url:{rule}"
    head = text[:MAX_CHARS]
    for domain, rule, test in TEXT_RULES:
        if test(head):
            return domain, f"text:{rule}"
    return "other", "default"


def url_target(url: str) -> str:
    parts = urlsplit(url.strip())
    host = (parts.hostname or "").removeprefix("www.")
    return f"{host}{parts.path or '/'}"


class DomainClassifier(Filter):
    """Sets meta["domain"] (and meta["domain_rule"], the rule that decided); never removes a document."""

    name = "domain"

    def __call__(self, doc: Doc) -> None:
        if doc.meta.get("domain") in DOMAINS:
            doc.meta.setdefault("domain_rule", "declared")
            return None
        doc.meta["domain"], doc.meta["domain_rule"] = classify(doc.url, doc.text)
        return None
