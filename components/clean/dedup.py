"""Exact and near (MinHash LSH) deduplication that works across shards.

Map side, per shard, anywhere: `exact_key(text)` and `signature(text, params)` for every document.
Reduce side, only (doc_id, exact_key, signature): `find_duplicates` keeps the first document of every
cluster and says why each other one goes. It is two partitionable steps:
1. edges: documents with the same exact key, and verified candidate pairs from the LSH buckets
   (`partition_edges`, one call per band range: each band is independent, so a distributed executor
   sends bucket keys (band, band hash) by range to reducers, and each reducer returns a spanning forest
   of its verified pairs, at most one edge per document);
2. `clusters`: union-find over the concatenated edge lists, which gives the same clusters whatever the
   partitioning, because connectivity does not depend on which partition found an edge.

Memory on the reduce side, per document: 16 bytes (exact key) + 8 * num_perm (signature, 1040 bytes
with the default 128) + the id, plus 16 bytes per document for the one band being grouped. A reducer
that owns a band range holds every signature (1M documents: ~1.1 GB); one that owns a bucket-key range
needs only the signatures of documents that share one of its buckets with another document.

Defaults (the S-curve): a pair with Jaccard s shares one band of r rows with probability s**r, so it
becomes a candidate with probability 1 - (1 - s**r)**b. Candidates are then verified on all num_perm
values, whose match rate estimates s with standard deviation sqrt(s(1-s)/num_perm) ~ 0.035 at s = 0.8.
Verifying at 0.8 would therefore drop half of the pairs at exactly 0.8 (~7% of pairs uniform in
0.8-1.0), whatever the bands; the threshold is 0.75 (1.4 sigma under 0.8: ~93% kept at 0.8, 99.9% at 0.85;
~12% of pairs at 0.7 and none under 0.6 are merged). With b=21, r=6 the LSH step is not the bottleneck:
98.4% of pairs at 0.75 and 99.8% at 0.8 become candidates (16 x 8 gives only 81% and 95%).
"""
from __future__ import annotations

import functools
import hashlib
import sys
import unicodedata
from typing import Iterable, Sequence

import numpy as np
from pydantic import Field, model_validator

from components.params import StrictModel

Edge = tuple[int, int]  # (kept-side index, other index) into the priority order, first < second
_MIX_SEED = 0x5EED  # fixed: a shingle's hash must not depend on params, nor on the machine
_EMPTY_VALUE = np.uint64(1 << 32)  # above every hash value (they are 32-bit): the MinHash of an empty set


class DedupParams(StrictModel):
    exact: bool = True
    near: bool = True
    shingle_size: int = Field(5, ge=1, description="words per shingle")
    num_perm: int = Field(128, ge=1, description="MinHash values per signature")
    bands: int = Field(21, ge=1, description="LSH bands; see the module docstring for the S-curve")
    rows: int = Field(6, ge=1, description="signature values per band")
    threshold: float = Field(0.75, gt=0, le=1, description="candidates merge if their estimated Jaccard is >= this")
    seed: int = 1

    @model_validator(mode="after")
    def _bands_fit_the_signature(self) -> DedupParams:
        if self.bands * self.rows > self.num_perm:
            raise ValueError(f"bands * rows = {self.bands * self.rows} exceeds num_perm = {self.num_perm}")
        return self


# --- map side ---------------------------------------------------------------------------------------
@functools.cache
def _punctuation_to_space() -> dict[int, str]:
    # Every Unicode punctuation character (category P*), built once (~0.1 s). A space, not nothing, so
    # that "end,start" and "end, start" normalise alike.
    return {cp: " " for cp in range(sys.maxunicode + 1) if unicodedata.category(chr(cp)).startswith("P")}


def normalise(text: str) -> str:
    """Lower case, Unicode NFKC, punctuation removed, whitespace collapsed: what both dedups compare."""
    text = unicodedata.normalize("NFKC", text).lower().translate(_punctuation_to_space())
    return " ".join(text.split())


def exact_key(text: str) -> bytes:
    """16 bytes identifying the normalised text."""
    return hashlib.blake2b(normalise(text).encode(), digest_size=16).digest()


@functools.lru_cache(maxsize=1 << 20)
def _word_hash(word: str) -> int:
    # Stable across processes and machines (Python's own hash() is salted per process).
    return int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")


@functools.cache
def _odd_weights(count: int) -> np.ndarray:
    # Odd 64-bit weights per position, to hash a sequence as sum(weight[j] * value[j]) mod 2**64: a shingle
    # from its word hashes, a band key from its rows. Fixed, so that every machine agrees.
    return np.random.default_rng(_MIX_SEED).integers(0, 2**64, count, dtype=np.uint64) | 1


def shingle_hashes(text: str, shingle_size: int) -> np.ndarray:
    """32-bit hashes of the distinct word n-grams of the normalised text (one shingle if it is shorter)."""
    words = normalise(text).split()
    hashes = np.fromiter(map(_word_hash, words), dtype=np.uint64, count=len(words))
    k = min(shingle_size, len(hashes))
    weights = _odd_weights(shingle_size)
    mixed = np.zeros(len(hashes) - k + 1 if k else 0, dtype=np.uint64)
    for j in range(k):  # vectorised over all n-grams at once, one word position at a time
        mixed += weights[j] * hashes[j:len(hashes) - k + 1 + j]
    return np.unique(mixed >> np.uint64(32))  # the high half is the well-mixed one


@functools.cache
def _permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 2**64, num_perm, dtype=np.uint64),
            rng.integers(0, 2**64, num_perm, dtype=np.uint64))


def signature(text: str, params: DedupParams = DedupParams()) -> np.ndarray:
    """MinHash signature, (num_perm,) uint64 with 32-bit values. Each permutation is the multiply-add-shift
    hash ((a * x + b) mod 2**64) >> 32 of a 32-bit shingle x (Dietzfelbinger: strongly universal, and only
    wrapping uint64 arithmetic, no modulo), so all of it runs in numpy."""
    a, b = _permutations(params.num_perm, params.seed)
    result = np.full(params.num_perm, _EMPTY_VALUE, dtype=np.uint64)
    shingles = shingle_hashes(text, params.shingle_size)
    for start in range(0, len(shingles), 4096):  # bounds the (shingles, num_perm) matrix at 4 MB
        block = shingles[start:start + 4096, None]
        np.minimum(result, ((a * block + b) >> np.uint64(32)).min(axis=0), out=result)
    return result


# --- reduce side ------------------------------------------------------------------------------------
class _UnionFind:
    """Clusters whose root is always their smallest index: the document that comes first is kept."""

    def __init__(self, size: int):
        self.parent = list(range(size))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]  # path halving
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> bool:
        """Merge the clusters of i and j; False if they were one already."""
        ri, rj = self.find(i), self.find(j)
        if ri == rj:
            return False
        self.parent[max(ri, rj)] = min(ri, rj)
        return True


def band_buckets(signatures: np.ndarray, band: int, rows: int) -> Iterable[np.ndarray]:
    """Indices (ascending) of the documents sharing each bucket of one band, for buckets of 2 or more."""
    block = signatures[:, band * rows:(band + 1) * rows]
    keys = (block * _odd_weights(rows)).sum(axis=1)  # any collision is harmless: pairs are verified
    order = np.argsort(keys, kind="stable")  # stable: members stay in priority order
    starts = np.flatnonzero(np.r_[True, keys[order][1:] != keys[order][:-1]])
    ends = np.r_[starts[1:], len(keys)]
    shared = ends - starts > 1  # most buckets hold one document; skip them without a Python loop
    return (order[start:end] for start, end in zip(starts[shared], ends[shared]))


def partition_edges(signatures: np.ndarray, params: DedupParams, bands: Sequence[int]) -> list[Edge]:
    """Verified candidate pairs from the given bands, as a spanning forest (one edge per merge).

    `signatures` is (documents, num_perm) in priority order; a distributed executor calls this per band
    range (or on the documents of a bucket-key range) and concatenates the results for `clusters`."""
    forest, edges = _UnionFind(len(signatures)), []
    for band in bands:
        for members in band_buckets(signatures, band, params.rows):
            for position in range(1, len(members)):
                doc, earlier = members[position], members[:position]
                similarity = (signatures[earlier] == signatures[doc]).mean(axis=1)
                for other in earlier[similarity >= params.threshold]:
                    if forest.union(int(other), int(doc)):
                        edges.append((int(other), int(doc)))
    return edges


def exact_edges(keys: Sequence[bytes]) -> list[Edge]:
    """Every document to the first one with the same exact key (partitionable by key range)."""
    first: dict[bytes, int] = {}
    return [(first[key], i) for i, key in enumerate(keys) if first.setdefault(key, i) != i]


def clusters(size: int, edges: Iterable[Edge]) -> list[int]:
    """The cluster root (its first document) of every document, after merging all edge lists."""
    forest = _UnionFind(size)
    for i, j in edges:
        forest.union(i, j)
    return [forest.find(i) for i in range(size)]


def find_duplicates(entries: Iterable[tuple[str, bytes, np.ndarray]],
                    params: DedupParams = DedupParams()) -> dict[str, tuple[str, str]]:
    """Removed doc_id -> ("exact" | "near", kept doc_id); entries come in priority order, first is kept."""
    ids, keys, signatures = [], [], []
    for doc_id, key, sig in entries:
        ids.append(doc_id)
        keys.append(key)
        signatures.append(sig)
    edges = exact_edges(keys) if params.exact else []
    if params.near and ids:
        # Exact duplicates have the same signature as their first copy: only first copies need LSH.
        copies = {j for _, j in edges}
        firsts = np.array([i for i in range(len(ids)) if i not in copies])
        near = partition_edges(np.stack([signatures[i] for i in firsts]), params, range(params.bands))
        edges += [(int(firsts[i]), int(firsts[j])) for i, j in near]
    roots = clusters(len(ids), edges)
    return {ids[i]: (_reason(keys, i, root, params), ids[root]) for i, root in enumerate(roots) if root != i}


def _reason(keys: Sequence[bytes], doc: int, kept: int, params: DedupParams) -> str:
    return "exact" if params.exact and keys[doc] == keys[kept] else "near"
