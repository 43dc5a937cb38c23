"""`llm-lifecycle clean` on a crawl of one's own: without a curated folder every other step runs and the quality
step is skipped (and says so), or a previous run's classifier scores; a planted pickle is refused up front."""
from __future__ import annotations

import pickle

import pandas as pd
import pytest

from components.clean.params import CleanParams
from components.clean.pipeline import clean
from components.clean.quality import FILENAME, QualityParams, UnsafeModelFile, train
from components.ingest import CrawlParams, Source, ingest

PARAMS = CleanParams.model_validate({"executor": {"workers": 1}, "language": {"candidates": ["en", "de", "fr"]}})


@pytest.fixture(scope="module")
def records(tmp_path_factory, data_dir):
    folder = tmp_path_factory.mktemp("records")
    ingest(CrawlParams(sources=[Source(uri=str(data_dir / "crawl/dolma-sample-0000.warc.gz"))]), folder,
           progress=False)
    return folder


def kept(out) -> pd.DataFrame:
    return pd.concat(pd.read_parquet(p) for p in sorted(out.glob("docs-*.parquet")))


def test_without_curated_text_the_quality_step_is_skipped_and_says_so(records, tmp_path):
    summary = clean(PARAMS, records, None, tmp_path, progress=False)
    assert "no curated folder" in summary["quality_model"]["skipped"]
    assert summary["steps"]["quality"]["docs_in"] == summary["steps"]["quality"]["docs_out"] == summary["documents"]
    assert summary["steps"]["dedup"]["docs_out"] == summary["documents"] > 0  # the other steps ran
    assert kept(tmp_path)["quality"].isna().all() and not (tmp_path / FILENAME).exists()


def test_a_previous_runs_classifier_scores_instead(records, data_dir, tmp_path):
    book = (data_dir / "curated/gutenberg/pg1342.txt").read_text(encoding="utf-8")
    model, _ = train([book[i:i + 3000] for i in range(20_000, 140_000, 3000)],
                     ["Buy now! Free shipping on all orders. Call us today."] * 10, QualityParams())
    model.save(tmp_path / "previous.safetensors")
    summary = clean(PARAMS, records, None, tmp_path / "out", progress=False,
                    quality_model=tmp_path / "previous.safetensors")
    assert summary["quality_model"] == {"reused": str(tmp_path / "previous.safetensors")}
    assert kept(tmp_path / "out")["quality"].between(0, 1).all()
    assert (tmp_path / "out" / FILENAME).read_bytes() == (tmp_path / "previous.safetensors").read_bytes()


def test_a_pickle_given_as_the_previous_classifier_is_refused_before_any_pass(records, tmp_path):
    planted = tmp_path / "quality_model.pkl"
    planted.write_bytes(pickle.dumps({"classifier": "anything"}))
    with pytest.raises(UnsafeModelFile):
        clean(PARAMS, records, None, tmp_path / "out", progress=False, quality_model=planted)
    assert not (tmp_path / "out" / ".work").exists()
