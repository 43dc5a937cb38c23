"""Dedup on real text (Pride and Prejudice) with planted near-duplicates of exactly known shingle Jaccard."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from components.clean.dedup import (DedupParams, clusters, exact_key, find_duplicates, partition_edges,
                                    signature)

REPO = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("LLM_LIFECYCLE_DATA_DIR") or REPO.parent / "shared" / "data")
BOOK = DATA / "curated" / "gutenberg" / "pg1342.txt"
DOC_WORDS = 150
K = DedupParams().shingle_size


@pytest.fixture(scope="module")
def documents() -> list[list[str]]:
    """Consecutive 150-word windows of the novel, as lower-case alphanumeric words: the dedup normalisation
    leaves them as they are, so the test's own shingles are exactly the component's."""
    if not BOOK.is_file():
        pytest.skip(f"test text not found at {BOOK}")
    words = re.findall(r"[a-z0-9]+", BOOK.read_text(encoding="utf-8").lower())
    return [words[i:i + DOC_WORDS] for i in range(0, len(words) - DOC_WORDS, DOC_WORDS)]


def shingles(words: list[str]) -> set[tuple[str, ...]]:
    return {tuple(words[i:i + K]) for i in range(len(words) - K + 1)}


def jaccard(a: list[str], b: list[str]) -> float:
    sa, sb = shingles(a), shingles(b)
    return len(sa & sb) / len(sa | sb)


def variant(words: list[str], target: float, rng: np.random.Generator) -> tuple[list[str], float]:
    """Replace random words by new ones until the Jaccard with the original drops to `target` or below."""
    copy = list(words)
    while jaccard(words, copy) > target:
        copy[rng.integers(len(copy))] = f"new{rng.integers(1 << 40)}"
    return copy, jaccard(words, copy)


def planted_pairs(documents, low: float, high: float, count: int, seed: int) -> list[tuple]:
    """(original id, original, copy id, copy, Jaccard) for `count` documents, each copy aimed into [low, high)."""
    rng = np.random.default_rng(seed)
    pairs = []
    for i in rng.choice(len(documents), count, replace=False):
        copy, similarity = variant(documents[i], rng.uniform(low, high), rng)
        pairs.append((f"orig{i}", documents[i], f"copy{i}", copy, similarity))
    return pairs


def as_entries(pairs) -> list[tuple[str, list[str]]]:
    return [entry for orig_id, orig, copy_id, copy, _ in pairs for entry in ((orig_id, orig), (copy_id, copy))]


def run(entries, params: DedupParams = DedupParams()) -> dict[str, tuple[str, str]]:
    texts = [(doc_id, words if isinstance(words, str) else " ".join(words)) for doc_id, words in entries]
    return find_duplicates([(doc_id, exact_key(text), signature(text, params)) for doc_id, text in texts], params)


def test_recall_at_jaccard_at_least_0_8(documents):
    pairs = [pair for pair in planted_pairs(documents, 0.8, 1.0, 200, seed=1) if pair[-1] >= 0.8]
    removed = run(as_entries(pairs))
    found = sum(removed.get(copy_id) == ("near", orig_id) for orig_id, _, copy_id, _, _ in pairs)
    assert found / len(pairs) >= 0.95
    assert set(removed) <= {copy_id for _, _, copy_id, _, _ in pairs}  # originals are unrelated: none goes


def test_no_removal_below_jaccard_0_5(documents):
    pairs = planted_pairs(documents, 0.2, 0.5, 200, seed=2)
    assert max(similarity for *_, similarity in pairs) < 0.5
    assert run(as_entries(pairs)) == {}


def test_signature_match_rate_estimates_the_jaccard(documents):
    rng = np.random.default_rng(3)
    errors = []
    for words in documents[:200]:
        copy, similarity = variant(words, rng.uniform(0.3, 0.95), rng)
        estimate = (signature(" ".join(words)) == signature(" ".join(copy))).mean()
        errors.append(estimate - similarity)
    assert abs(np.mean(errors)) < 0.01  # unbiased
    assert np.std(errors) < 0.06  # sqrt(J(1-J)/128) is at most 0.044


def test_exact_duplicates_differ_only_in_case_space_punctuation_and_unicode_form():
    text = "It is a truth universally acknowledged, that a single man in possession of a good fortune, " \
           "must be in want of a wife. Don't you find it so, Mr. Bennet?"
    other_punctuation = str.maketrans({",": ";", "'": "’", ".": "!"})
    variants = [text.upper(), re.sub(r" ", "  \n\t", text), text.translate(other_punctuation),
                text.replace("fi", "\ufb01").replace("M", "\uff2d")]  # the "fi" ligature, a full-width M
    assert len({exact_key(t) for t in [text, *variants]}) == 1 and len(exact_key(text)) == 16
    removed = run([("first", text)] + [(f"v{i}", t) for i, t in enumerate(variants)])
    assert removed == {f"v{i}": ("exact", "first") for i in range(len(variants))}


def chain(words: list[str], links: int) -> list[list[str]]:
    """Each document is the previous one with a different 9-word stretch replaced: neighbours are near
    duplicates (J = 133/159 = 0.84), documents two links apart are not (J = 0.70, then falling)."""
    docs = [list(words)]
    for link in range(links):
        nxt = list(docs[-1])
        nxt[20 + 25 * link:29 + 25 * link] = [f"link{link}w{i}" for i in range(9)]
        docs.append(nxt)
    return docs


def test_one_survivor_per_chain_cluster_the_first_in_priority_order(documents):
    docs = chain(documents[10], 4)
    assert all(jaccard(a, b) >= 0.8 for a, b in zip(docs, docs[1:]))
    assert jaccard(docs[0], docs[2]) < 0.75 and jaccard(docs[0], docs[4]) < 0.5
    order = [3, 0, 4, 1, 2]  # priority is the entries' order, not the chain's
    entries = [(f"c{i}", docs[i]) for i in order] + [("exact-of-c4", " ".join(docs[4]).upper())]
    entries += [(f"other{i}", documents[100 + i]) for i in range(5)]
    removed = run(entries)
    survivors = [doc_id for doc_id, _ in entries if doc_id not in removed]
    assert survivors == ["c3"] + [f"other{i}" for i in range(5)]
    assert {kept for _, kept in removed.values()} == {"c3"}
    assert removed["exact-of-c4"] == ("near", "c3") and removed["c0"] == ("near", "c3")


def test_the_same_input_gives_the_same_result(documents):
    entries = as_entries(planted_pairs(documents, 0.6, 1.0, 100, seed=4))
    assert run(entries) == run(entries)


def test_signatures_do_not_depend_on_the_process():
    """Shards are signed on other machines: Python's per-process string hash must play no part."""
    code = "from components.clean.dedup import signature; print(signature('the same text on another machine').tolist())"
    other = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": "12345"}).stdout
    assert eval(other) == signature("the same text on another machine").tolist()


def test_partitions_by_band_range_merge_to_the_same_clusters(documents):
    entries = as_entries(planted_pairs(documents, 0.7, 1.0, 100, seed=5))
    entries += [(f"chain{i}", words) for i, words in enumerate(chain(documents[20], 3))]
    params = DedupParams(exact=False)
    signatures = np.stack([signature(" ".join(words), params) for _, words in entries])
    edges = [edge for start in range(0, params.bands, 5)
             for edge in partition_edges(signatures, params, range(start, min(start + 5, params.bands)))]
    roots = clusters(len(entries), edges)
    by_partition = {entries[i][0]: entries[root][0] for i, root in enumerate(roots) if root != i}
    assert by_partition == {doc: kept for doc, (_, kept) in run(entries, params).items()}
    assert len(by_partition) > 50


def test_exact_and_near_can_be_switched_off(documents):
    words = documents[30]
    near_copy, _ = variant(words, 0.9, np.random.default_rng(6))
    entries = [("a", words), ("a-upper", " ".join(words).upper()), ("a-near", near_copy)]
    assert run(entries, DedupParams(near=False)) == {"a-upper": ("exact", "a")}
    assert run(entries, DedupParams(exact=False)) == {"a-upper": ("near", "a"), "a-near": ("near", "a")}


def test_bands_must_fit_in_the_signature():
    with pytest.raises(ValidationError):
        DedupParams(num_perm=64, bands=16, rows=8)
    with pytest.raises(ValidationError):
        DedupParams(band=3)
