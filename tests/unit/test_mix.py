"""Domain mixing: requested shares, up-sampling caps, deterministic selection."""
from __future__ import annotations

import pandas as pd
import pytest
from pydantic import ValidationError

from components.mix import MixParams, build_mix
from components.mix.mix import plan


def corpus(sizes: dict[str, list[int]]) -> pd.DataFrame:
    rows = [{"id": f"{domain}/{i}", "domain": domain, "chars": n, "source": domain, "quality": 0.5}
            for domain, lengths in sizes.items() for i, n in enumerate(lengths)]
    return pd.DataFrame(rows)


def test_shares_are_met_by_down_and_up_sampling():
    meta = corpus({"reference": [100] * 80, "news": [100] * 10, "fiction": [100] * 10})
    copies, table = plan(meta, MixParams(weights={"reference": 0.5, "news": 0.3, "fiction": 0.2}, max_repeat=4))
    shares = table.set_index("domain")["realised"]
    assert shares.to_dict() == pytest.approx({"reference": 0.5, "news": 0.3, "fiction": 0.2}, abs=0.01)
    assert copies[copies.index.str.startswith("news")].eq(3).all()  # up-sampled: 3 epochs of news
    assert copies[copies.index.str.startswith("reference")].isin([0, 1]).all()  # down-sampled, never repeated
    assert 0 < (copies[copies.index.str.startswith("reference")] == 0).sum() < 80


def test_a_domain_too_small_for_its_share_is_capped_and_the_rest_renormalised():
    meta = corpus({"reference": [100] * 100, "code": [100] * 2})
    copies, table = plan(meta, MixParams(weights={"reference": 0.5, "code": 0.5}, max_repeat=4))
    rows = table.set_index("domain")
    assert copies[copies.index.str.startswith("code")].max() == 4  # the cap, not 26 repeats
    assert rows.loc["code", "effective"] == pytest.approx(800 / 10200)
    assert rows.loc["code", "realised"] == pytest.approx(rows.loc["code", "effective"], abs=1e-3)
    assert (table["deviation"] < 0.01).all()


def test_domains_without_data_are_dropped_and_selection_is_deterministic():
    meta = corpus({"reference": [50 + i for i in range(200)], "news": [100] * 30})
    params = MixParams(weights={"reference": 0.6, "news": 0.3, "forum": 0.1})
    first, table = plan(meta, params)
    assert table.set_index("domain").loc["forum", "effective"] == 0
    assert first.equals(plan(meta.sample(frac=1, random_state=3), params)[0].reindex(first.index))
    assert not first.equals(plan(meta, params.model_copy(update={"seed": 2}))[0])


def test_weights_must_be_shares():
    with pytest.raises(ValidationError, match="sum to 1"):
        MixParams(weights={"reference": 0.6, "news": 0.6})


def test_build_mix_writes_copies_and_an_anneal_set(tmp_path):
    docs = pd.DataFrame([{"id": f"w/{i}", "text": "x" * 100, "source": "crawl", "domain": "news",
                          "quality": i / 10, "url": f"http://e.com/{i}"} for i in range(10)]
                        + [{"id": f"wiki/{i}", "text": "y" * 100, "source": "wikipedia", "domain": "reference",
                            "quality": None, "url": None} for i in range(30)])
    docs.to_parquet(tmp_path / "docs.parquet")
    out = tmp_path / "out"
    out.mkdir()
    params = MixParams(weights={"news": 0.5, "reference": 0.5}, max_repeat=2,
                       anneal={"fraction": 0.1, "sources": ["wikipedia"], "min_quality": 0.85})
    report = build_mix(params, [tmp_path / "docs.parquet"], out)
    pretrain = pd.concat(pd.read_parquet(out / name) for name in report["pretrain_shards"])
    assert pretrain.groupby("domain")["text"].apply(lambda t: t.str.len().sum()).to_dict() == {
        "news": 2000, "reference": 2000}  # news up-sampled x2 to match
    assert set(pretrain.loc[pretrain["domain"] == "news", "epoch"]) == {0, 1}
    anneal = pd.concat(pd.read_parquet(out / name) for name in report["anneal_shards"])
    assert set(anneal["source"]) <= {"wikipedia", "crawl"} and (
        anneal.loc[anneal["source"] == "crawl", "quality"] >= 0.85).all()
    assert report["anneal_documents"] == len(anneal) == 4  # 10% of 4,000 characters
