"""Domain labels: the URL's own statement where it makes one, else a classifier trained on labelled pages.

Precedence, first match wins:
  1. a curated document's declared domain (meta["domain"], set by its source in params.yaml);
  2. URL rules, in URL_RULES order: the host and path are the publisher's own statement of what a page is
     (wikipedia.org, github.com, /forum/, /news/, shop paths): right on 34 of the 37 training pages and 7 of
     the 7 held-out pages they decide;
  3. the domain model: a multinomial logistic regression over the page's static embedding (components/clean/
     embed.py), averaged over chunks of the first MAX_CHARS characters — a tokenizer pass and a matrix product,
     cheap at crawl scale.
The model ships with the project (domain_model.safetensors, ≈ 11 KB, weights and JSON metadata: loading it runs
no code) and is rebuilt from the labels by `python -m benchmarks.domain_pool fit`. The labels
(domain_labels.jsonl) name documents of the shared public data by URL or line and hold no text: 406 for
training, 150 held out, each labelled by reading its first 1,500 characters and picking the DOMAINS definition
that fits what the page *is*; benchmarks/RESULTS.md has the held-out accuracy and the labels' own agreement.
Text rules (regexes for datelines, code syntax, selling phrases) came before the model: 0.61 held out, the model
0.68 (always "other": 0.40).
"""
from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
from safetensors.numpy import save_file

from components.clean.doc import Doc, Filter
from components.clean.embed import embedder, embedder_name
from components.clean.quality import read_safetensors

DOMAINS = {
    "reference": "explains a topic for lookup: encyclopedia, wiki, dictionary, textbook, scholarly article",
    "news": "reports or comments on current events: news articles, press releases, news-outlet opinion",
    "forum": "people talking to each other: forum threads, Q&A sites, comment sections, social posts",
    "fiction": "invented narrative or verse: novels, stories, drama, poetry, lyrics",
    "code": "source code, or software text where code and commands are central (docs, tutorials, repos)",
    "commerce": "sells something: product, shop and listing pages, service adverts, prices",
    "other": "everything else: personal and organisation pages, blogs, how-to, recipes, speeches, spam",
}

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

MAX_CHARS = 1500  # what the labelled pages show: the model is trained and applied on the same cut
CHUNK_CHARS = 400  # the embedder reads 128 tokens (≈ 500 characters): longer text is embedded in chunks, averaged
MODEL_FILE = Path(__file__).with_name("domain_model.safetensors")
FORMAT_VERSION = 1  # of the saved file; bump when its contents change
REBUILD = "Rebuild it from the labels: python -m benchmarks.domain_pool fit"


class DomainModel:
    """predict(texts) → one of DOMAINS per text."""

    def __init__(self, weights: np.ndarray, bias: np.ndarray, classes: list[str]):
        # (classes, embedding dim), C order: scikit-learn's coef_ can be Fortran-ordered, and safetensors writes
        # the raw buffer
        self.weights = np.ascontiguousarray(weights, dtype=np.float32)
        self.bias = np.asarray(bias, dtype=np.float32)
        self.classes = classes

    def predict(self, texts: list[str]) -> list[str]:
        if not texts:
            return []
        logits = embed_chunked(texts) @ self.weights.T + self.bias
        return [self.classes[i] for i in logits.argmax(axis=1)]

    def save(self, path: Path) -> None:
        meta = {"version": str(FORMAT_VERSION), "embedder": embedder_name(), "classes": json.dumps(self.classes),
                "max_chars": str(MAX_CHARS), "chunk_chars": str(CHUNK_CHARS)}
        save_file({"weights": self.weights, "bias": self.bias}, str(path), metadata=meta)

    @classmethod
    def load(cls, path: Path) -> DomainModel:
        tensors, meta = read_safetensors(path, "domain model", REBUILD)
        expected = {"version": str(FORMAT_VERSION), "embedder": embedder_name(), "max_chars": str(MAX_CHARS),
                    "chunk_chars": str(CHUNK_CHARS)}
        if {key: meta.get(key) for key in expected} != expected:
            raise ValueError(f"{path} was made for {meta}, this code reads {expected}. {REBUILD}")
        return cls(tensors["weights"], tensors["bias"], json.loads(meta["classes"]))


def fit(texts: list[str], domains: list[str], regularization: float = 100.0) -> DomainModel:
    """Balanced class weights: the rare domains (fiction, code, forum) must not be swallowed by "other"."""
    from sklearn.linear_model import LogisticRegression

    classifier = LogisticRegression(C=regularization, class_weight="balanced", max_iter=5000)
    classifier.fit(embed_chunked(texts), domains)
    return DomainModel(classifier.coef_, classifier.intercept_, list(classifier.classes_))


def embed_chunked(texts: list[str]) -> np.ndarray:
    """Each text's first MAX_CHARS characters in CHUNK_CHARS pieces, embedded, averaged and normalised."""
    heads = [text[:MAX_CHARS] for text in texts]
    pieces = [[head[i:i + CHUNK_CHARS] for i in range(0, max(len(head), 1), CHUNK_CHARS)] for head in heads]
    vectors = embedder().embed([piece for doc in pieces for piece in doc])
    ends = np.cumsum([len(doc) for doc in pieces])
    means = np.array([chunk.mean(axis=0) for chunk in np.split(vectors, ends[:-1])])
    norms = np.linalg.norm(means, axis=1, keepdims=True)
    return means / np.where(norms > 0, norms, 1)


@lru_cache(maxsize=1)
def shipped_model() -> DomainModel:
    return DomainModel.load(MODEL_FILE)


def classify(url: str | None, text: str) -> tuple[str, str]:
    """(domain, the rule that decided it), e.g. ("reference", "url:wiki")."""
    if url:
        target = url_target(url)
        for domain, rule, pattern in URL_PATTERNS:
            if pattern.search(target):
                return domain, f"url:{rule}"
    return shipped_model().predict([text])[0], "model"


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
