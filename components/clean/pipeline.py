"""The clean stage: crawl records → extracted, filtered, scrubbed, deduplicated, scored documents.

Passes over the shards alternate with small global steps, so the same code runs on one machine or many:
  1. per shard  url → extract → language → gopher_repetition → gopher_quality → c4 → c4_badwords → fineweb → pii,
                plus each survivor's dedup keys (16 bytes + a MinHash signature)
  2. global     duplicates across all shards, from the keys alone; the quality classifier, trained on
                curated positives against a random sample of crawl documents
  3. per shard  drop duplicates, score quality, classify domain
  4. global     the quality cutoff (a fixed threshold, or the score that keeps `keep_fraction`)
  5. per shard  apply the cutoff and write the final shards
Every removal is written beside the output with its step and rule (removed/), and every step's counts
feed the data card.
"""
from __future__ import annotations

import random
from fnmatch import fnmatch
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from components.clean import dedup, quality
from components.clean.doc import Doc
from components.clean.executor import map_shards
from components.clean.params import CleanParams, build_filters
from components.clean.domain import DomainClassifier
from components.clean.steps import StepStats, apply_filters, merge_stats, removal
from components.clean.store import read_docs, write_docs, write_removed

NEGATIVES = 20_000  # crawl documents the quality classifier trains on (a random sample)


def clean(params: CleanParams, records_dir: Path, curated_dir: Path | None, out_dir: Path, progress: bool = True,
          quality_model: Path | None = None) -> dict:
    """Run every pass; write docs-*.parquet, removed/*.parquet and quality_model.safetensors into out_dir.

    Without curated_dir there are no positives to train the quality classifier on: `quality_model` (a previous
    run's quality_model.safetensors) scores instead, or, without one either, the quality step is skipped (every
    document kept, quality null) and the summary says so."""
    if curated_dir is None and quality_model is not None:
        quality.QualityModel.load(quality_model)  # refuses anything but a current safetensors model, before the passes
    work = out_dir / ".work"
    work.mkdir(parents=True)
    shards = sorted(str(p) for p in Path(records_dir).glob("records-*.parquet"))
    ex = params.executor
    firsts = map_shards(_filter_shard, shards, (str(work), params), ex, "clean: filter", progress)
    stats = merge_stats(f["stats"] for f in firsts)
    kept_shards = [f["path"] for f in firsts]

    duplicates = dedup.find_duplicates(_dedup_entries(kept_shards), params.dedup)
    stats["dedup"] = _dedup_stats(sum(f["kept"] for f in firsts), duplicates)
    report = _quality_model(kept_shards, duplicates, curated_dir, quality_model, params, out_dir / quality.FILENAME)

    per_shard = [_removals_in(shard, duplicates) for shard in kept_shards]  # each worker gets only its own
    scored = map_shards(_score_shard, list(zip(kept_shards, per_shard)), (str(out_dir), params), ex, "clean: score",
                        progress)
    crawl_scores = np.concatenate([s["scores"] for s in scored]) if scored else np.array([])
    threshold = None if "skipped" in report else (
        quality.cutoff(crawl_scores, params.quality) if params.quality.enabled else 0.0)
    final = map_shards(_cut_shard, [s["path"] for s in scored], (str(out_dir), threshold), ex, "clean: cut",
                       progress)
    stats["quality"] = StepStats(docs_in=sum(s["documents"] for s in scored), docs_out=sum(f["kept"] for f in final),
                                 chars_out=sum(f["chars"] for f in final))
    stats["quality"].removed["below_cutoff"] = stats["quality"].docs_in - stats["quality"].docs_out
    shutil.rmtree(work)
    return {"steps": {name: s.as_dict() for name, s in stats.items()}, "quality_model": report,
            "quality_cutoff": threshold, "documents": stats["quality"].docs_out, "input_shards": len(shards)}


def _filter_shard(shard: str, work: str, params: CleanParams) -> dict:
    """Pass 1 on one shard: the per-document filters, then dedup keys for the survivors."""
    stats: dict[str, StepStats] = {}
    removed: list[dict] = []
    name = Path(shard).stem.replace("records", "kept")
    kept = list(apply_filters(_records(shard), build_filters(params), stats, removed))
    for doc in kept:
        doc.meta["exact_key"] = dedup.exact_key(doc.text)
        doc.meta["signature"] = dedup.signature(doc.text, params.dedup).tobytes()
    path = Path(work) / f"{name}.parquet"
    write_docs(kept, path)
    write_removed(removed, Path(work).parent / "removed" / f"{name}-filters.parquet")
    return {"path": str(path), "kept": len(kept), "stats": stats}


def _records(shard: str):
    table = pd.read_parquet(shard, columns=["record_id", "url", "html", "payload_digest", "fetch_time"])
    for row in table.itertuples(index=False):
        yield Doc(id=row.record_id, text="", source="crawl", url=row.url,
                  meta={"html": row.html, "warc_record_id": row.record_id, "payload_digest": row.payload_digest,
                        "fetch_time": row.fetch_time.isoformat()})


def _dedup_entries(kept_shards: list[str]):
    """(id, exact key, signature) in shard order: the first document of a cluster is the one kept."""
    for shard in kept_shards:
        keys = pd.read_parquet(shard, columns=["id", "exact_key", "signature"])
        for row in keys.itertuples(index=False):
            yield row.id, row.exact_key, np.frombuffer(row.signature, dtype=np.uint64)


def _dedup_stats(docs_in: int, duplicates: dict) -> StepStats:
    step = StepStats(docs_in=docs_in, docs_out=docs_in - len(duplicates))
    for kind, _ in duplicates.values():
        step.removed[kind] += 1
    return step


def _quality_model(kept_shards, duplicates, curated_dir, previous: Path | None, params, path: Path) -> dict:
    """Writes the quality classifier to `path` and returns its report ({"skipped": why} when there is none)."""
    if curated_dir is not None:
        model, report = _train_quality(kept_shards, duplicates, curated_dir, params)
        model.save(path)
        return report
    if previous is not None:
        shutil.copyfile(previous, path)
        return {"reused": str(previous)}
    return {"skipped": "no curated folder to train the quality classifier on, and no previous model given: "
                       "no document was scored or removed by quality"}


def _train_quality(kept_shards, duplicates, curated_dir, params):
    """Positives: curated text (encyclopedia, books). Negatives: a random sample of the crawl documents that
    survived so far, plus curated web text (crawl that others cleaned)."""
    q = params.quality
    curated = list(read_docs(sorted(Path(curated_dir).glob("docs-*.parquet")), ["id", "text", "source"]))
    positives = [d.text for d in curated if _matches(d.source, q.positive_sources)]
    web = [d.text for d in curated if _matches(d.source, q.negative_sources)]
    crawl = (d.text for d in read_docs(kept_shards, ["id", "text"]) if d.id not in duplicates)
    return quality.train(positives, _reservoir(crawl, NEGATIVES, q.seed) + web, q)


def _matches(source: str, patterns: list[str]) -> bool:
    return any(fnmatch(source, p) for p in patterns)


def _reservoir(items, k: int, seed: int) -> list:
    """A uniform random sample of k items from a stream of unknown length, in O(k) memory."""
    rng, sample = random.Random(seed), []
    for i, item in enumerate(items):
        if i < k:
            sample.append(item)
        elif (j := rng.randrange(i + 1)) < k:
            sample[j] = item
    return sample


def _removals_in(shard: str, duplicates: dict) -> dict:
    if not Path(shard).exists():
        return {}
    return {i: duplicates[i] for i in pd.read_parquet(shard, columns=["id"])["id"] if i in duplicates}


def _score_shard(shard_and_duplicates: tuple[str, dict], out_dir: str, params: CleanParams) -> dict:
    """Pass 3 on one shard: drop duplicates, score quality, classify domain."""
    shard, duplicates = shard_and_duplicates
    model_path = Path(out_dir) / quality.FILENAME
    model = quality.QualityModel.load(model_path) if model_path.exists() else None
    classify = DomainClassifier()
    docs, removed = [], []
    for doc in read_docs([shard]):
        if doc.id in duplicates:
            kind, kept_id = duplicates[doc.id]
            removed.append(removal(doc, "dedup", kind, detail=f"duplicate of {kept_id}"))
            continue
        classify(doc)
        docs.append(doc)
    scores = model.score([d.text for d in docs]) if docs and model else np.array([])
    for doc, score in zip(docs, scores if model else [None] * len(docs)):
        doc.meta["quality"] = None if score is None else float(score)
        for key in ("exact_key", "signature"):
            doc.meta.pop(key)
    path = Path(shard).with_name(Path(shard).name.replace("kept", "scored"))
    write_docs(docs, path)
    write_removed(removed, Path(out_dir) / "removed" / f"{Path(shard).stem}-dedup.parquet")
    return {"path": str(path), "scores": scores, "documents": len(docs)}


def _cut_shard(shard: str, out_dir: str, threshold: float | None) -> dict:
    """Pass 5 on one shard: keep documents at or above the quality cutoff (all of them without one); write the
    final shard."""
    kept, removed = [], []
    for doc in read_docs([shard]):
        if threshold is None or doc.meta["quality"] >= threshold:
            kept.append(doc)
        else:
            removed.append(removal(doc, "quality", "below_cutoff", detail=f"{doc.meta['quality']:.3f} < {threshold:.3f}"))
    name = Path(shard).stem.replace("scored", "docs")
    write_docs(kept, Path(out_dir) / f"{name}.parquet")
    write_removed(removed, Path(out_dir) / "removed" / f"{name}-quality.parquet")
    return {"kept": len(kept), "chars": sum(len(d.text) for d in kept)}
