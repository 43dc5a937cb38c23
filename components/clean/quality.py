"""Model-based quality filter: how much does a page read like curated text (Wikipedia, books, speeches)?

A classifier is trained with curated documents as positives and random crawl documents as negatives
(GPT-3's and Llama's recipe); crawl documents are then kept by score. It has to run over billions of pages,
so it is a logistic regression over two cheap views of the document's start: hashed word 1-2-gram counts (no
vocabulary to fit or store: the hashing vectorizer is stateless) and a static embedding (components/clean/
embed.py: a tokenizer pass and an average of token vectors, no neural network at run time). Either alone
transfers less well to sources it was not trained on than the two together (benchmarks/RESULTS.md,
leave-one-source-out).

The model is saved as safetensors (weights) with JSON metadata: a stage output can arrive from a shared DVC
remote, and loading it must not be able to run code, which pickle (joblib) files can.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from pydantic import Field, model_validator
from safetensors import SafetensorError, safe_open
from safetensors.numpy import load_file, save_file
from scipy import sparse

from components.clean.embed import embedder, embedder_name
from components.params import StrictModel

FORMAT_VERSION = 2  # of the saved file; bump when its contents change
FILENAME = "quality_model.safetensors"


class QualityParams(StrictModel):
    enabled: bool = True
    threshold: float | None = Field(None, ge=0, le=1, description="keep documents scoring at least this")
    keep_fraction: float | None = Field(0.8, gt=0, le=1, description="or keep this top share of crawl documents")
    holdout_fraction: float = Field(0.2, gt=0, lt=1, description="share of training documents held out to report")
    seed: int = 1
    regularization: float = Field(1.0, gt=0, description="inverse L2 strength C of the logistic regression")
    n_features: int = Field(2**18, gt=0, description="hash buckets for the word 1-2-grams")
    max_chars: int = Field(5000, gt=0, description="only a document's start is read: cost stays flat per document")
    positive_sources: list[str] = Field(["wiki*", "gutenberg*", "shakespeare", "inaugural", "state_union"],
                                        description="curated sources (name patterns) used as positives")
    negative_sources: list[str] = Field(["c4", "dolma*"], description="curated web text (name patterns) added "
                                        "to the random crawl sample as negatives; a tiny crawl alone is too few")

    @model_validator(mode="after")
    def _one_cutoff_rule(self) -> QualityParams:
        if (self.threshold is None) == (self.keep_fraction is None):
            raise ValueError("set exactly one of threshold and keep_fraction (the other to null); "
                             f"got threshold={self.threshold}, keep_fraction={self.keep_fraction}")
        return self


class UnsafeModelFile(ValueError):
    """A classifier file that is not safetensors (a pickle, say): refused, never deserialized."""


class QualityModel:
    """score(texts) is the probability that each text is curated-like, in [0, 1]."""

    def __init__(self, weights: np.ndarray, bias: float, max_chars: int, n_features: int):
        self.weights = np.asarray(weights, dtype=np.float32)
        self.bias = float(bias)
        self.max_chars = max_chars
        self.n_features = n_features

    def score(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.empty(0)
        return self.score_features(featurize(texts, self.max_chars, self.n_features))

    def score_features(self, features: np.ndarray) -> np.ndarray:
        logits = np.asarray(features @ self.weights, dtype=np.float64) + self.bias
        return 1 / (1 + np.exp(-logits))

    def save(self, path: Path) -> None:
        meta = {"version": str(FORMAT_VERSION), "embedder": embedder_name(), "max_chars": str(self.max_chars),
                "n_features": str(self.n_features)}
        save_file({"weights": self.weights, "bias": np.array([self.bias], dtype=np.float64)}, str(path), metadata=meta)

    @classmethod
    def load(cls, path: Path) -> QualityModel:
        tensors, meta = read_safetensors(path, "quality model", "Rerun the clean stage to write one.")
        if meta.get("version") != str(FORMAT_VERSION) or meta.get("embedder") != embedder_name():
            raise ValueError(f"{path}: quality model format {meta.get('version')} on {meta.get('embedder')}, "
                             f"expected {FORMAT_VERSION} on {embedder_name()}; rerun the clean stage")
        return cls(tensors["weights"], float(tensors["bias"][0]), int(meta["max_chars"]), int(meta["n_features"]))


def read_safetensors(path: Path, what: str, remedy: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(arrays, metadata) of a classifier file, read as safetensors only: a header of JSON and raw arrays, nothing
    that can execute. Anything else (a pickle, say) is refused with UnsafeModelFile."""
    try:
        with safe_open(str(path), framework="numpy") as file:
            meta = file.metadata() or {}
        return load_file(str(path)), meta
    except (SafetensorError, json.JSONDecodeError, UnicodeDecodeError, OSError) as err:
        raise UnsafeModelFile(f"{path} is not a safetensors {what} ({err}); refusing to read it any other way. "
                              f"{remedy}") from err


def featurize(texts: list[str], max_chars: int, n_features: int) -> sparse.csr_matrix:
    """[static embedding | hashed word 1-2-gram counts] of each text's first max_chars characters."""
    # scikit-learn is imported where it is used: ≈ 1 s, and every flow run imports this module for QualityParams
    from sklearn.feature_extraction.text import HashingVectorizer

    heads = [text[:max_chars] for text in texts]
    # alternate_sign=False keeps counts non-negative so colliding n-grams add up instead of cancelling.
    ngrams = HashingVectorizer(ngram_range=(1, 2), n_features=n_features, alternate_sign=False, norm="l2")
    return sparse.hstack([sparse.csr_matrix(embedder().embed(heads)), ngrams.transform(heads)], format="csr")


def train(positives: list[str], negatives: list[str], params: QualityParams) -> tuple[QualityModel, dict]:
    """Fit on all but a stratified holdout, and report on the holdout; the returned model is the one measured."""
    from sklearn.metrics import accuracy_score, roc_auc_score
    from sklearn.model_selection import train_test_split

    if len(positives) < 2 or len(negatives) < 2:
        raise ValueError(f"need at least 2 positives and 2 negatives, got {len(positives)} and {len(negatives)}")
    features = featurize(positives + negatives, params.max_chars, params.n_features)
    labels = np.array([1] * len(positives) + [0] * len(negatives))
    train_x, holdout_x, train_y, holdout_y = train_test_split(
        features, labels, test_size=params.holdout_fraction, stratify=labels, random_state=params.seed)
    model = fit(train_x, train_y, params)
    scores = model.score_features(holdout_x)
    report = {"holdout_accuracy": float(accuracy_score(holdout_y, scores >= 0.5)),
              "holdout_auc": float(roc_auc_score(holdout_y, scores)),
              "n_pos": len(positives), "n_neg": len(negatives), "n_holdout": len(holdout_y),
              "embedder": embedder_name()}
    return model, report


def fit(features: np.ndarray, labels: np.ndarray, params: QualityParams) -> QualityModel:
    from sklearn.linear_model import LogisticRegression

    # Balanced class weights: curated and crawl sets rarely have the same size, and the score must not
    # simply learn the prior.
    classifier = LogisticRegression(C=params.regularization, class_weight="balanced", max_iter=1000)
    classifier.fit(features, labels)
    return QualityModel(classifier.coef_[0], classifier.intercept_[0], params.max_chars, params.n_features)


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
