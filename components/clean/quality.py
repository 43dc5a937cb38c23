"""Model-based quality filter: how much does a page read like curated text (Wikipedia, books)?

A classifier is trained with curated documents as positives and random crawl documents as negatives
(GPT-3's and Llama's recipe); crawl documents are then kept by score. It has to run over billions of pages,
so it is a linear model on hashed word 1-2-gram counts: no vocabulary to fit or store (the hashing
vectorizer is stateless: only its settings are saved), a sparse dot product per document.
"""
from __future__ import annotations

from pathlib import Path

import joblib
import numpy as np
from pydantic import Field, model_validator
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.model_selection import train_test_split

from components.params import StrictModel

FORMAT_VERSION = 1  # of the saved file; bump when its contents change


class QualityParams(StrictModel):
    enabled: bool = True
    threshold: float | None = Field(None, ge=0, le=1, description="keep documents scoring at least this")
    keep_fraction: float | None = Field(0.8, gt=0, le=1, description="or keep this top share of crawl documents")
    holdout_fraction: float = Field(0.2, gt=0, lt=1, description="share of training documents held out to report")
    seed: int = 1
    n_features: int = Field(2**20, gt=0, description="hash buckets; collisions are rare below ~1M distinct n-grams")
    max_chars: int = Field(5000, gt=0, description="only a document's start is read: cost stays flat per document")
    positive_sources: list[str] = Field(["wiki*", "gutenberg*", "shakespeare"],
                                        description="curated sources (name patterns) used as positives")
    negative_sources: list[str] = Field(["c4", "dolma*"], description="curated web text (name patterns) added "
                                        "to the random crawl sample as negatives; a tiny crawl alone is too few")

    @model_validator(mode="after")
    def _one_cutoff_rule(self) -> QualityParams:
        if (self.threshold is None) == (self.keep_fraction is None):
            raise ValueError("set exactly one of threshold and keep_fraction (the other to null); "
                             f"got threshold={self.threshold}, keep_fraction={self.keep_fraction}")
        return self


class QualityModel:
    """score(texts) is the probability that each text is curated-like, in [0, 1]."""

    def __init__(self, vectorizer: HashingVectorizer, classifier: LogisticRegression, max_chars: int):
        self.vectorizer = vectorizer
        self.classifier = classifier
        self.max_chars = max_chars

    def score(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.empty(0)
        features = self.vectorizer.transform([text[: self.max_chars] for text in texts])
        return self.classifier.predict_proba(features)[:, 1]

    def save(self, path: Path) -> None:
        contents = {"version": FORMAT_VERSION, "vectorizer": self.vectorizer.get_params(),
                    "classifier": self.classifier, "max_chars": self.max_chars}
        joblib.dump(contents, path)

    @classmethod
    def load(cls, path: Path) -> QualityModel:
        """Unpickles: load only files this project wrote (pickle runs code)."""
        contents = joblib.load(path)
        if contents.get("version") != FORMAT_VERSION:
            raise ValueError(f"{path}: quality model format {contents.get('version')}, expected {FORMAT_VERSION}")
        return cls(HashingVectorizer(**contents["vectorizer"]), contents["classifier"], contents["max_chars"])


def make_vectorizer(params: QualityParams) -> HashingVectorizer:
    # alternate_sign=False keeps counts non-negative so colliding n-grams add up instead of cancelling.
    return HashingVectorizer(ngram_range=(1, 2), n_features=params.n_features, alternate_sign=False, norm="l2")


def train(positives: list[str], negatives: list[str], params: QualityParams) -> tuple[QualityModel, dict]:
    """Fit on all but a stratified holdout, and report on the holdout; the returned model is the one measured."""
    if len(positives) < 2 or len(negatives) < 2:
        raise ValueError(f"need at least 2 positives and 2 negatives, got {len(positives)} and {len(negatives)}")
    texts = [text[: params.max_chars] for text in positives + negatives]
    labels = np.array([1] * len(positives) + [0] * len(negatives))
    train_texts, holdout_texts, train_labels, holdout_labels = train_test_split(
        texts, labels, test_size=params.holdout_fraction, stratify=labels, random_state=params.seed)
    vectorizer = make_vectorizer(params)
    # Balanced class weights: curated and crawl sets rarely have the same size, and the score must not
    # simply learn the prior.
    classifier = LogisticRegression(class_weight="balanced", max_iter=1000)
    classifier.fit(vectorizer.transform(train_texts), train_labels)
    model = QualityModel(vectorizer, classifier, params.max_chars)
    scores = model.score(holdout_texts)
    report = {"holdout_accuracy": float(accuracy_score(holdout_labels, scores >= 0.5)),
              "holdout_auc": float(roc_auc_score(holdout_labels, scores)),
              "n_pos": len(positives), "n_neg": len(negatives), "n_holdout": len(holdout_texts)}
    return model, report


def cutoff(scores: np.ndarray, params: QualityParams) -> float:
    """The score a document needs to be kept (score >= cutoff).

    With keep_fraction it is the score of the k-th best document, k = round(fraction * n) (at least 1), so
    k documents are kept, more only when scores tie. It must be computed over the whole crawl (or a random
    sample of it), not per shard, so that every shard applies the same bar."""
    if params.threshold is not None:
        return params.threshold
    scores = np.asarray(scores, dtype=float)
    if scores.size == 0:
        return 1.0  # nothing to keep; any bar will do
    k = max(1, round(params.keep_fraction * scores.size))
    return float(np.partition(scores, scores.size - k)[scores.size - k])
