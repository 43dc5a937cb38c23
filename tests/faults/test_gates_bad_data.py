"""Every data suite the DAG runs, fed a bad output by its real stage: the gate fails naming the suite, the shard and
the rule; nothing is published (the last good output stays), so the next stage has nothing new to read.
(crawl_records and pretrained_model are fed bad data in tests/unit/test_gates.py and the pipeline tests.)

The stage bodies are replaced by writers of small frames (the test is about the gate and the publication, not
about cleaning or tokenizing); each suite's good frame passes, so each failure is the one bad value."""
from __future__ import annotations

import pandas as pd
import pytest

from tasks import gates, stage as stage_runner
from tasks.dag import Workspace
from tests.conftest import make_workspace

N = 12


def docs(**columns) -> pd.DataFrame:
    base = {"id": [f"d{i}" for i in range(N)], "text": [f"Document {i} says something plain." for i in range(N)],
            "source": ["wiki"] * N, "domain": ["reference"] * N}
    return pd.DataFrame(base | columns)


def clean_docs() -> pd.DataFrame:
    return docs(url=[f"https://example.com/{i}" for i in range(N)], language=["en"] * N, language_score=[0.9] * N,
                quality=[0.5] * N, warc_record_id=[f"<urn:uuid:{i}>" for i in range(N)],
                payload_digest=[f"sha1:{i}" for i in range(N)])


def proportions() -> pd.DataFrame:
    return pd.DataFrame({"domain": ["reference", "fiction"], "requested": [0.5, 0.5], "effective": [0.5, 0.5],
                         "realised": [0.52, 0.48], "deviation": [0.02, 0.02]})


def roundtrip() -> pd.DataFrame:
    return pd.DataFrame({"name": [f"doc-{i}" for i in range(N)], "chars": [100] * N, "tokens": [30] * N,
                         "exact": [True] * N})


def contract() -> pd.DataFrame:
    return pd.DataFrame({"name": ["train-00000.bin"], "empty": [False], "vocab_size": [4096], "max_id": [4095],
                         "dtype": ["uint16"], "expected_dtype": ["uint16"], "eot_count": [10], "documents": [10],
                         "ends_with_eot": [True], "offsets_valid": [True], "tokens": [5000],
                         "manifest_tokens": [5000], "manifest_documents": [10], "tokenizer_digest": ["ab12"],
                         "expected_digest": ["ab12"], "md5_matches": [True]})


def with_value(frame: pd.DataFrame, column: str, value, row: int = 3) -> pd.DataFrame:
    frame = frame.copy()
    frame[column] = frame[column].astype(object)
    frame.loc[row, column] = value
    return frame.infer_objects()


def mix_files(pretrain: pd.DataFrame | None = None, shares: pd.DataFrame | None = None) -> dict:
    pretrain = docs(epoch=[0] * N) if pretrain is None else pretrain
    return {"pretrain-00000.parquet": pretrain, "anneal-00000.parquet": docs(epoch=[0] * N),
            "proportions.parquet": proportions() if shares is None else shares}


# suite → (its stage, the good files, the bad files, the broken rule as the gate names it, the bad shard)
CASES = {
    "clean_docs": ("clean", {"docs-00000.parquet": clean_docs()},
                   {"docs-00000.parquet": with_value(clean_docs(), "text", "mail jane.doe@example.com today")},
                   "column='pii_left'", "docs-00000.parquet"),
    "curated_docs": ("curate", {"docs-00000.parquet": docs()},
                     {"docs-00000.parquet": with_value(docs(), "domain", "astrology")},
                     "column='domain'", "docs-00000.parquet"),
    "mix_docs": ("mix", mix_files(), mix_files(pretrain=docs(epoch=[0] * N, id=["same"] * N)),
                 "expect_compound_columns_to_be_unique", "pretrain-00000.parquet"),
    "mix_proportions": ("mix", mix_files(), mix_files(shares=with_value(proportions(), "deviation", 0.3, row=1)),
                        "column='deviation'", "proportions.parquet"),
    "tokenizer_roundtrip": ("tokenizer", {"roundtrip.parquet": roundtrip()},
                            {"roundtrip.parquet": with_value(roundtrip(), "exact", False)},
                            "column='exact'", "roundtrip.parquet"),
    "token_shards": ("tokenize", {"contract.parquet": contract()},
                     {"contract.parquet": with_value(contract(), "max_id", 4096, row=0)},  # an id past the vocabulary
                     "column_A='vocab_size'", "contract.parquet"),
}


@pytest.fixture(scope="module")
def ws(tmp_path_factory, data_dir):
    from tasks.params import resolve, write_effective

    workspace = Workspace(make_workspace(tmp_path_factory.mktemp("gates") / "ws"))
    write_effective(workspace, resolve(workspace, "tiny"))
    return workspace


def run_stage_writing(ws: Workspace, name: str, files: dict, monkeypatch) -> dict:
    """Run stage `name` for real (inputs, staging, gate, publication) with a body that writes `files`."""
    for folder in ws.stage(name).inputs().values():
        (ws.root / folder).mkdir(parents=True, exist_ok=True)

    def body(ctx, progress):
        for file, frame in files.items():
            frame.to_parquet(ctx.out_dir / file, index=False)
        return {"files": len(files)}

    monkeypatch.setattr(ws.module(name), "run", body)
    return stage_runner.execute(ws, name, progress=False)


@pytest.mark.parametrize("suite", list(CASES))
def test_bad_output_fails_its_gate_and_is_not_published(ws, suite, monkeypatch):
    name, good, bad, rule, shard = CASES[suite]
    assert ws.module(name).GATES.get(shard, suite) == suite or suite in ws.module(name).GATES.values()
    run_stage_writing(ws, name, good, monkeypatch)  # the last good output
    published = ws.root / ws.stage(name).data_out
    good_files = sorted(p.name for p in published.iterdir())

    with pytest.raises(gates.GateFailed) as failed:
        run_stage_writing(ws, name, bad, monkeypatch)

    message = str(failed.value)
    assert f"gate {suite!r} failed" in message and f"{shard}:" in message and rule in message, message
    assert sorted(p.name for p in published.iterdir()) == good_files
    assert all(pd.read_parquet(published / f).equals(frame) for f, frame in good.items()), "the good output changed"
    assert not list(published.parent.glob(f".staging-{published.name}-*"))
