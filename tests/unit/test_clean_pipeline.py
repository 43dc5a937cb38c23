"""The clean stage's passes on real crawl records spread over shards: duplicates across shards are found,
every removal is recorded, and a Dask cluster gives the same result as the local process pool."""
from __future__ import annotations

import gzip
import json

import pandas as pd
import pytest

from components.clean.params import CleanParams
from components.clean.pipeline import clean
from components.ingest import CrawlParams, Source, ingest


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, data_dir):
    """Two shards of real English pages, and a third holding 3 exact and 2 near copies of pages in them."""
    root = tmp_path_factory.mktemp("clean-inputs")
    records = root / "records"
    records.mkdir()
    ingest(CrawlParams(sources=[Source(uri=str(data_dir / "crawl/dolma-sample-0000.warc.gz"))], shard_records=11),
           records, progress=False)
    pages = pd.concat(pd.read_parquet(p) for p in sorted(records.glob("records-*.parquet")))
    copies = pages.iloc[[1, 3, 12]].copy()  # pages that pass every filter (checked), so only dedup removes copies
    near = pages.iloc[[6, 16]].copy()
    near["html"] = near["html"].str.replace(" the ", " this ", n=4)  # a few words changed: Jaccard still > 0.8
    extra = pd.concat([copies, near])
    extra["record_id"] = [f"<urn:uuid:copy-{i}>" for i in range(len(extra))]
    extra.to_parquet(records / "records-00002.parquet")

    curated = root / "curated"
    curated.mkdir()
    book = (data_dir / "curated/gutenberg/pg1342.txt").read_text(encoding="utf-8")
    chunks = [book[i:i + 3000] for i in range(20_000, 320_000, 3000)]
    with gzip.open(data_dir / "curated/web-docs/dolma-tests/cc_en_head-0091.jsonl.gz", "rt") as f:
        web = [json.loads(line)["text"] for line in f]
    pd.DataFrame([{"id": f"gutenberg/{i}", "text": t, "source": "gutenberg", "domain": "fiction"}
                  for i, t in enumerate(chunks)] + [{"id": f"dolma/{i}", "text": t, "source": "dolma",
                                                     "domain": "other"} for i, t in enumerate(web)]
                 ).to_parquet(curated / "docs-00000.parquet")
    return records, curated, set(copies["record_id"]) | set(near["record_id"]), len(pages)


def run_clean(inputs, tmp_path, **executor):
    records, curated, _, _ = inputs
    params = CleanParams.model_validate({"executor": executor, "language": {"candidates": ["en", "de", "fr"]}})
    out = tmp_path / "out"
    out.mkdir(parents=True)
    summary = clean(params, records, curated, out, progress=False)
    docs = pd.concat(pd.read_parquet(p) for p in sorted(out.glob("docs-*.parquet")))
    removed = pd.concat(pd.read_parquet(p) for p in sorted((out / "removed").glob("*.parquet")))
    return summary, docs, removed


def test_duplicates_across_shards_leave_one_survivor_and_every_removal_has_a_reason(inputs, tmp_path):
    _, _, originals, n_pages = inputs
    summary, docs, removed = run_clean(inputs, tmp_path, kind="local", workers=2)

    dups = removed[removed["step"] == "dedup"].set_index("id")
    assert set(dups.index) == {f"<urn:uuid:copy-{i}>" for i in range(5)}
    assert dups["rule"].value_counts().to_dict() == {"exact": 3, "near": 2}
    assert all(d.removeprefix("duplicate of ") in originals for d in dups["detail"])
    assert docs["id"].is_unique and not docs["id"].str.startswith("<urn:uuid:copy").any()

    steps = summary["steps"]
    assert steps["url"]["docs_in"] == n_pages + 5
    assert len(docs) + len(removed) == n_pages + 5  # every input is kept or removed with its reason
    assert removed[["step", "rule"]].notna().all().all()
    # C4's bad-words rule is audited like the others: one page of this sample has a word of the English list.
    assert steps["c4_badwords"]["removed"] == {"badwords_en": 1}
    badwords = removed[(removed["step"] == "c4_badwords") & (removed["rule"] == "badwords_en")]
    assert len(badwords) == 1 and badwords["detail"].iloc[0].startswith("matched '")  # which word, for the audit
    assert docs["quality"].between(0, 1).all() and set(docs["language"]) == {"en"}
    assert set(docs["domain"]) <= {"reference", "news", "forum", "fiction", "code", "commerce", "other"}
    assert 0.5 < summary["quality_model"]["holdout_accuracy"] <= 1


def test_dask_cluster_gives_the_same_documents_as_the_process_pool(inputs, tmp_path):
    _, local, _ = run_clean(inputs, tmp_path / "local", kind="local", workers=2)
    _, dask, _ = run_clean(inputs, tmp_path / "dask", kind="dask", workers=2)
    columns = ["id", "text", "quality", "domain"]
    assert local[columns].reset_index(drop=True).equals(dask[columns].reset_index(drop=True))
