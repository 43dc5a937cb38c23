"""Accuracy and speed of the cleaning classifiers on the shared public data; prints markdown tables.

    .venv/bin/python -m benchmarks.classifier_accuracy

Quality, leave-one-source-out (the headline): nine sources, five curated (WikiText, Wikipedia, Gutenberg, Tiny
Shakespeare, the nltk presidential speeches) and four web (C4, dolma's CCNet documents, the trafilatura
evaluation pages and the shared crawl's pages, both extracted as the clean stage does). For each source, the
classifier (default QualityParams) is trained on the eight others and scores the held-out one. Per curated
source: the AUC of its scores against every web document's held-out scores; the headline is their mean, with a
95% bootstrap interval (documents resampled within each source); chance is 0.5.
The domain classifier is scored by `python -m benchmarks.domain_pool score`.
"""
from __future__ import annotations

import gzip
import os
import tempfile
import time
from itertools import cycle, islice
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import sparse
from sklearn.metrics import roc_auc_score

from components.clean.doc import Doc
from components.clean.extract import Extract
from components.clean.quality import QualityParams, featurize, fit, train
from components.curated import CuratedSource, read_source
from components.ingest import CrawlParams, Source, ingest

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("LLM_LIFECYCLE_DATA_DIR", REPO.parent / "shared" / "data")).resolve()
CURATED = DATA / "curated"
SPEED_DOCS = 1000
BOOTSTRAP = 1000
MIN_CHARS = 200  # web pages whose extracted text is shorter are not documents the classifier would see


def texts(path: str, format: str, **options) -> list[str]:
    source = CuratedSource(name="b", uri=str(CURATED / path), format=format, domain=None, **options)
    return [doc.text for doc in read_source(source)]


def extracted(pages) -> list[str]:
    """(url, html) pairs → the text the clean stage's extractor keeps."""
    step, out = Extract(), []
    for url, html in pages:
        doc = Doc(id="page", text="", source="crawl", url=url, meta={"html": html})
        if step(doc) is None and len(doc.text) >= MIN_CHARS:
            out.append(doc.text)
    return out


def crawl_pages() -> list[tuple[str, str]]:
    warcs = [p for p in sorted((DATA / "crawl").glob("*.warc*")) if not p.name.endswith((".wat.gz", ".wet.gz"))]
    with tempfile.TemporaryDirectory() as folder:
        ingest(CrawlParams(sources=[Source(uri=str(p)) for p in warcs]), Path(folder), progress=False)
        records = pd.concat(pd.read_parquet(p, columns=["url", "html"]) for p in Path(folder).glob("records-*"))
    return list(records.itertuples(index=False, name=None))


def eval_pages() -> list[tuple[str, str]]:
    files = sorted((DATA / "html" / "trafilatura-eval" / "html").glob("*"))
    return [(None, gzip.open(f, "rt", errors="replace").read()) for f in files]


def sources() -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    curated = {"WikiText": texts("wikitext-2/valid.txt", "wikitext"),
               "Wikipedia": texts("llamafactory-demo/wiki_demo.txt", "lines"),
               "Gutenberg": texts("gutenberg/pg*.txt", "gutenberg", split_chars=5000),
               "Shakespeare": texts("tinyshakespeare/input.txt", "text", split_chars=5000),
               "speeches": texts("nltk/*.zip", "zip_txt")}
    web = {"C4": texts("llamafactory-demo/c4_demo.jsonl", "jsonl"),
           "dolma CCNet": texts("web-docs/dolma-tests/*.jsonl.gz", "jsonl"),
           "trafilatura eval pages": extracted(eval_pages()), "crawl pages": extracted(crawl_pages())}
    return curated, web


def leave_one_source_out(curated: dict, web: dict, params: QualityParams) -> dict[str, np.ndarray]:
    """Each source's scores from a model trained on every other source."""
    features = {name: featurize(docs, params.max_chars, params.n_features) for name, docs in (curated | web).items()}
    held_out = {}
    for name in features:
        rest = [other for other in features if other != name]
        labels = np.concatenate([np.full(features[o].shape[0], o in curated, dtype=int) for o in rest])
        model = fit(sparse.vstack([features[o] for o in rest]), labels, params)
        held_out[name] = model.score_features(features[name])
    return held_out


def auc(positive: np.ndarray, negative: np.ndarray) -> float:
    return float(roc_auc_score(np.r_[np.ones(len(positive)), np.zeros(len(negative))], np.r_[positive, negative]))


def per_source_auc(held_out: dict, curated: dict, web: dict, rng=None) -> dict[str, float]:
    """Per curated source, AUC against all web documents; with rng, on a resample within each source."""
    pick = (lambda a: a) if rng is None else (lambda a: a[rng.integers(0, len(a), len(a))])
    negatives = np.concatenate([pick(held_out[name]) for name in web])
    return {name: auc(pick(held_out[name]), negatives) for name in curated}


def quality_rows() -> list[tuple[str, str]]:
    params = QualityParams()
    curated, web = sources()
    held_out = leave_one_source_out(curated, web, params)
    per_source = per_source_auc(held_out, curated, web)
    rng = np.random.default_rng(0)
    means = [np.mean(list(per_source_auc(held_out, curated, web, rng).values())) for _ in range(BOOTSTRAP)]
    low, high = np.percentile(means, [2.5, 97.5])
    pooled = auc(np.concatenate([held_out[n] for n in curated]), np.concatenate([held_out[n] for n in web]))
    rows = [("**leave-one-source-out AUC, mean over curated sources (95% CI; chance 0.5)**",
             f"**{np.mean(list(per_source.values())):.3f}** ({low:.3f}-{high:.3f})"),
            ("leave-one-source-out AUC, all held-out scores pooled", f"{pooled:.3f}")]
    rows += [(f"held out: {name} ({len(curated[name])} docs) vs held-out web", f"{value:.3f}")
             for name, value in per_source.items()]
    rows.append(("web documents: " + ", ".join(f"{name} {len(docs)}" for name, docs in web.items()), ""))
    return rows + stage_rows(curated, web, params)


def stage_rows(curated: dict, web: dict, params: QualityParams) -> list[tuple[str, str]]:
    """The stage's own setting: every source in training, a stratified holdout; and scoring speed."""
    positives = [text for docs in curated.values() for text in docs]
    negatives = [text for docs in web.values() for text in docs]
    started = time.perf_counter()
    model, report = train(positives, negatives, params)
    train_s = time.perf_counter() - started
    batch = list(islice(cycle(negatives + positives), SPEED_DOCS))  # real documents, cut to max_chars by score()
    started = time.perf_counter()
    model.score(batch)
    docs_per_s = SPEED_DOCS / (time.perf_counter() - started)
    return [("all sources, stratified holdout: accuracy / AUC",
             f"{report['holdout_accuracy']:.3f} / {report['holdout_auc']:.4f} ({report['n_holdout']} docs)"),
            ("training time (s, all sources)", f"{train_s:.1f}"),
            (f"score() throughput (docs/s, {SPEED_DOCS} docs, ≤{params.max_chars} chars each)", f"{docs_per_s:,.0f}"),
            ("load average (1 min) at the end", f"{os.getloadavg()[0]:.1f}")]


def main() -> None:
    print("## Quality classifier (static embedding + hashed 1-2-grams, logistic regression)\n")
    print("| measure | value |\n|---|---|")
    for name, value in quality_rows():
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
