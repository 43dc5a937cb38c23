"""Quality classifier (curated vs web text) and domain classifier, on the real public text in ../shared/data."""
from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError
from sklearn.metrics import roc_auc_score

from components.clean.doc import Doc
from components.clean import domain
from components.clean.domain import DomainClassifier, classify
from components.clean.quality import QualityModel, QualityParams, UnsafeModelFile, cutoff, train
from components.curated import CuratedSource, read_source

REPO = Path(__file__).resolve().parents[2]
CURATED = Path(os.environ.get("LLM_LIFECYCLE_DATA_DIR", REPO.parent / "shared" / "data")).resolve() / "curated"
LABELS = REPO / "components" / "clean" / "domain_labels.jsonl"
needs_data = pytest.mark.skipif(not CURATED.is_dir(), reason=f"test data not found at {CURATED}")


def texts(path: str, format: str, **options) -> list[str]:
    source = CuratedSource(name="t", uri=str(CURATED / path), format=format, domain=None, **options)
    return [doc.text for doc in read_source(source)]


@pytest.fixture(scope="module")
def trained() -> tuple[QualityModel, dict]:
    """Positives: WikiText articles and Gutenberg chunks (771); negatives: the 300 C4 web documents."""
    positives = texts("wikitext-2/valid.txt", "wikitext") + texts("gutenberg/pg*.txt", "gutenberg", split_chars=5000)
    return train(positives, texts("llamafactory-demo/c4_demo.jsonl", "jsonl"), QualityParams())


@needs_data
def test_quality_model_separates_curated_from_web_text(trained):
    model, report = trained
    assert report["n_pos"] == 771 and report["n_neg"] == 300 and report["n_holdout"] == 215
    assert report["holdout_accuracy"] >= 0.90  # measured 0.981
    assert report["holdout_auc"] >= 0.95  # measured 0.999


@needs_data
def test_quality_model_ranks_unseen_sources_above_chance(trained):
    """Held-out *sources*: real Wikipedia (no <unk>, unlike WikiText) against dolma's CCNet web documents.
    Much harder than the holdout, which shares sources (and WikiText's <unk> tokens) with training; the
    benchmark's leave-one-source-out AUC is the full measure."""
    model, _ = trained
    wikipedia = model.score(texts("llamafactory-demo/wiki_demo.txt", "lines"))
    web = model.score(texts("web-docs/dolma-tests/*.jsonl.gz", "jsonl"))
    labels = [1] * len(wikipedia) + [0] * len(web)
    assert roc_auc_score(labels, np.concatenate([wikipedia, web])) >= 0.6  # measured 0.69 (n-grams alone: 0.70)


@needs_data
def test_scores_are_probabilities_and_survive_save_and_load(trained, tmp_path):
    model, _ = trained
    sample = texts("web-docs/dolma-tests/*.jsonl.gz", "jsonl") + ["", "a"]
    scores = model.score(sample)
    assert scores.shape == (len(sample),) and ((scores >= 0) & (scores <= 1)).all()
    model.save(tmp_path / "quality.safetensors")
    assert np.array_equal(QualityModel.load(tmp_path / "quality.safetensors").score(sample), scores)
    assert model.score([]).shape == (0,)


class WritesMarker:
    """A pickle payload: unpickling it calls Path.write_text, as an attacker's file would run any code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.write_text, (self.marker, "code ran")


def test_a_pickled_classifier_is_refused_and_never_unpickled(tmp_path):
    """A stage output can come from a shared DVC remote: a pickle where the model belongs must not run."""
    marker, planted = tmp_path / "marker", tmp_path / "quality_model.safetensors"
    planted.write_bytes(pickle.dumps({"version": 2, "classifier": WritesMarker(marker)}))
    with pytest.raises(UnsafeModelFile, match="not a safetensors quality model"):
        QualityModel.load(planted)
    assert not marker.exists(), "loading the classifier ran the pickle's code"
    pickle.loads(planted.read_bytes())  # the payload is live: unpickling it does write the marker
    assert marker.read_text() == "code ran"


def test_cutoff_keeps_the_requested_share():
    scores = np.random.default_rng(0).random(1000)
    bar = cutoff(scores, QualityParams(keep_fraction=0.3))
    assert (scores >= bar).sum() == 300
    assert (np.ones(10) >= cutoff(np.ones(10), QualityParams(keep_fraction=0.3))).sum() == 10  # ties are all kept
    assert cutoff(scores, QualityParams(threshold=0.42, keep_fraction=None)) == 0.42
    assert (scores >= cutoff(scores[:1], QualityParams(keep_fraction=0.01))).sum() >= 1  # at least one is kept


def test_quality_params_want_exactly_one_cutoff_rule():
    with pytest.raises(ValidationError, match="exactly one of threshold and keep_fraction"):
        QualityParams(threshold=0.5)  # keep_fraction keeps its default 0.8
    with pytest.raises(ValidationError, match="exactly one of threshold and keep_fraction"):
        QualityParams(keep_fraction=None)
    with pytest.raises(ValidationError):
        QualityParams(keep_fraction=1.5)


def test_training_needs_both_classes():
    with pytest.raises(ValueError, match="at least 2 positives"):
        train(["a", "b"], ["c"], QualityParams())


@needs_data
def test_domain_model_on_held_out_pages():
    """The held-out pages that need no extraction (C4, dolma, Wikipedia: 110 of 150); all 150 give 0.680
    (`python -m benchmarks.domain_pool score`). Always "other" scores 0.40 on them."""
    from benchmarks.domain_pool import labelled

    test = labelled("test", sources=["c4_demo", "dolma", "wiki_demo"])
    right = sum(classify(row["url"], row["text"])[0] == row["domain"] for row in test)
    assert len(test) == 110 and right / len(test) >= 0.55  # measured 68/110 = 0.62; always "other": 0.43
    train_keys = {row["key"] for row in map(json.loads, LABELS.read_text().splitlines()) if row["split"] == "train"}
    assert not train_keys & {row["key"] for row in test}


@pytest.mark.heavy
@needs_data
def test_shipped_domain_model_is_what_fit_gives_on_the_labels(tmp_path):
    from benchmarks.domain_pool import labelled

    rows = labelled("train")
    fitted = domain.fit([row["text"] for row in rows], [row["domain"] for row in rows])
    shipped = domain.shipped_model()
    assert fitted.classes == shipped.classes
    np.testing.assert_allclose(fitted.weights, shipped.weights, atol=1e-5)


def test_domain_model_file_round_trips_and_refuses_a_pickle(tmp_path):
    model = domain.fit(["def f(x):\n    return x + 1", "Buy now: free shipping on every order, $9.99",
                        "import os\nprint(os.getcwd())", "Add to cart. In stock. Price $19.99"],
                       ["code", "commerce", "code", "commerce"])
    model.save(tmp_path / "m.safetensors")
    loaded = domain.DomainModel.load(tmp_path / "m.safetensors")
    texts = ["for i in range(3): print(i)", "Order today and save 20%"]
    assert loaded.predict(texts) == model.predict(texts) and loaded.classes == ["code", "commerce"]
    np.testing.assert_array_equal(loaded.weights, model.weights)
    marker, planted = tmp_path / "marker", tmp_path / "evil.safetensors"
    planted.write_bytes(pickle.dumps(WritesMarker(marker)))
    with pytest.raises(UnsafeModelFile, match="not a safetensors domain model"):
        domain.DomainModel.load(planted)
    assert not marker.exists(), "loading the domain model ran the pickle's code"


@pytest.mark.parametrize("url, text, domain", [
    ("https://en.wikipedia.org/wiki/Homarus_gammarus", "", "reference"),
    ("https://an.wikipedia.org/wiki/Escopete", "", "reference"),
    ("https://github.com/allenai/dolma/blob/main/README.md", "", "code"),
    ("https://german.stackexchange.com/questions/10376/when-to-use-wurde", "", "forum"),
    ("https://www.bbc.com/news/world-us-canada-52241221", "", "news"),
    ("http://www.uraharajuku.st/shopdetail/001005000005/019/000/order/", "", "commerce"),
    ("https://www.royalroad.com/fiction/34798/melas/chapter/535107/chapter-1-prologue-murdered", "", "fiction"),
])
def test_domain_url_rules_on_real_examples(url, text, domain):
    assert classify(url, text) == (domain, classify(url, text)[1]) and classify(url, text)[1].startswith("url:")


def test_domain_filter_labels_and_never_removes():
    step = DomainClassifier()
    page = Doc(id="r1", text="", source="crawl", url="https://en.wikipedia.org/wiki/Lobster")
    book = Doc(id="gutenberg/0", text="import os\nx = 1;\n" * 5, source="gutenberg", meta={"domain": "fiction"})
    assert step(page) is None and step(book) is None
    assert page.meta == {"domain": "reference", "domain_rule": "url:wiki"}
    assert book.meta == {"domain": "fiction", "domain_rule": "declared"}  # curated sources keep their domain
