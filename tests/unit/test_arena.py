"""The arena: Bradley-Terry ranking (known strengths recovered, equal to scikit-learn's logistic regression),
pairing, the vote store (restart, double submit, all-or-nothing writes), export to preference pairs, and the
page's API with fake and broken model servers."""
from __future__ import annotations

import json
import math
import os
import socket
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sklearn.linear_model import LogisticRegression
from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError

from components import openai_client
from components.arena import (Vote, VoteStore, bootstrap_intervals, bradley_terry, leaderboard, pair_weights,
                              sqlite_url, write_pairs)
from components.arena.ranking import RIDGE, SCALE
from components.arena.store import votes_table
from components.preferences import PreferenceSource, read_preferences
from infra.arena import Arena, ArenaError, Contestant, Settings, create_app

STRENGTHS = {"m-strong": 1250, "m-good": 1120, "m-mid": 1000, "m-weak": 930, "m-poor": 700}


def simulate(n_votes: int, seed: int, tie_share: float = 0.0) -> pd.DataFrame:
    """Votes between random pairs, A winning with the Elo-curve probability of the true strengths."""
    rng = np.random.default_rng(seed)
    names = list(STRENGTHS)
    rows = []
    for _ in range(n_votes):
        a, b = rng.choice(names, 2, replace=False)
        p_a = 1 / (1 + 10 ** ((STRENGTHS[b] - STRENGTHS[a]) / 400))
        vote = rng.choice(["tie", "both_bad"]) if rng.random() < tie_share else ("a" if rng.random() < p_a else "b")
        rows.append((a, b, vote))
    return pd.DataFrame(rows, columns=["model_a", "model_b", "vote"])


def test_bradley_terry_recovers_known_strengths_within_the_bootstrap_interval():
    votes = simulate(4000, seed=7)
    scores, intervals = bradley_terry(votes), bootstrap_intervals(votes, rounds=300)
    assert list(scores.index) == sorted(STRENGTHS, key=STRENGTHS.get, reverse=True)
    assert scores.mean() == pytest.approx(1000)  # scores are centred: the average model is 1000
    truth = pd.Series(STRENGTHS) - np.mean(list(STRENGTHS.values())) + 1000
    for model, true_score in truth.items():
        assert intervals.at[model, "lower"] <= true_score <= intervals.at[model, "upper"], model
        assert intervals.at[model, "lower"] <= scores[model] <= intervals.at[model, "upper"]


def test_bradley_terry_equals_scikit_learn_logistic_regression_on_the_design_matrix():
    """Rows: +1 for side A's model, -1 for side B's, label 1 when A won; a tie (or both bad) is two rows of weight
    one half, one won by each side; the same ridge (C = 1/ridge) and no intercept."""
    votes = simulate(1500, seed=3, tie_share=0.2)
    models = sorted(STRENGTHS)
    column = {model: i for i, model in enumerate(models)}
    design = np.zeros((len(votes), len(models)))
    design[np.arange(len(votes)), votes["model_a"].map(column)] = 1
    design[np.arange(len(votes)), votes["model_b"].map(column)] = -1
    tied = votes["vote"].isin(["tie", "both_bad"]).to_numpy()
    x = np.vstack([design, design[tied]])
    y = np.concatenate([np.where(tied, 1, votes["vote"].eq("a")), np.zeros(tied.sum())])
    weight = np.concatenate([np.where(tied, 0.5, 1.0), np.full(tied.sum(), 0.5)])
    reference = LogisticRegression(fit_intercept=False, C=1 / RIDGE, tol=1e-12, max_iter=10_000)
    reference.fit(x, y, sample_weight=weight)
    expected = pd.Series(1000 + SCALE * reference.coef_[0], index=models)
    assert bradley_terry(votes).sort_index().to_numpy() == pytest.approx(expected.to_numpy(), abs=1e-3)
    assert SCALE == pytest.approx(400 / math.log(10))


def test_leaderboard_tallies_win_rates_and_counts():
    votes = pd.DataFrame([("x", "y", "a"), ("y", "x", "a"), ("x", "y", "a"), ("x", "y", "tie"), ("y", "x", "both_bad")],
                         columns=["model_a", "model_b", "vote"])
    board = leaderboard(votes, rounds=50)
    assert board.total_votes == 5 and list(board.table.index) == ["x", "y"]
    assert board.table.loc["x", ["votes", "wins", "losses", "ties"]].tolist() == [5, 2, 1, 2]
    assert board.win_rate.at["x", "y"] == pytest.approx(2 / 3) and board.battles.at["x", "y"] == 5
    assert leaderboard(votes.iloc[:0]).table.empty


def test_pairing_favours_close_and_under_sampled_pairs():
    scores = pd.Series({"a": 1000.0, "b": 1010.0, "c": 1400.0})
    none = pd.DataFrame(0, index=list(scores.index), columns=list(scores.index))
    weights = pair_weights(list(scores.index), scores, none)
    assert weights[("a", "b")] > weights[("a", "c")]  # close beats foregone
    many = none.copy()
    many.loc["a", "b"] = many.loc["b", "a"] = 50
    assert pair_weights(list(scores.index), scores, many)[("a", "b")] < weights[("a", "b")] / 10
    assert pair_weights(["a", "new"], scores, none)[("a", "new")] == pytest.approx(1.0)  # unscored: even odds


def vote(round_id: str = "r1", choice: str = "a", reply_a: str = "Paris.", reply_b: str = "Lyon.") -> Vote:
    return Vote(round_id, "Capital of France?", "llm-lifecycle-sft", "3", reply_a, "llm-lifecycle-dpo", "1",
                reply_b, choice)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path) -> str:
    """A fresh vote database: a SQLite file; PostgreSQL too when ARENA_TEST_POSTGRES_URL names one (its arena
    table is dropped first)."""
    if request.param == "sqlite":
        return sqlite_url(tmp_path / "votes.db")
    url = os.environ.get("ARENA_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("set ARENA_TEST_POSTGRES_URL=postgresql+psycopg2://USER:PASSWORD@HOST/DB to test PostgreSQL too")
    store = VoteStore(url)
    votes_table.drop(store.engine)
    store.close()
    return url


def test_votes_survive_a_restart_and_a_double_submit_counts_once(store_url):
    url = store_url
    store = VoteStore(url)
    assert store.record(vote("r1")) and store.record(vote("r2", "tie"))
    assert not store.record(vote("r1", "b"))  # the same round again: ignored, the first vote stands
    with pytest.raises(ValueError, match="unknown vote"):
        store.record(vote("r3", "maybe"))
    store.close()

    reopened = VoteStore(url)
    assert [(v.round_id, v.vote) for v in reopened.votes()] == [("r1", "a"), ("r2", "tie")]
    first = reopened.find("r1")
    assert (first.contestant_a, first.reply_b, first.created_at.tzinfo is not None) == (
        "llm-lifecycle-sft/3", "Lyon.", True)
    assert reopened.battles().to_dict("records")[0] == {
        "model_a": "llm-lifecycle-sft/3", "model_b": "llm-lifecycle-dpo/1", "vote": "a"}


def test_a_write_is_whole_or_nothing(store_url):
    """The database itself refuses a vote outside a|b|tie|both_bad (a CHECK constraint): no partial row."""
    store = VoteStore(store_url)
    row = {k: v for k, v in vote("r9").__dict__.items()} | {"vote": "maybe"}
    with pytest.raises(IntegrityError), store.engine.begin() as connection:
        connection.execute(insert(votes_table).values(**row))
    assert store.count() == 0


def test_export_makes_pairs_of_decisive_votes_that_the_preferences_stage_reads(tmp_path):
    votes = [vote("r1", "a"), vote("r2", "b"), vote("r3", "tie"), vote("r4", "both_bad"),
             vote("r5", "a", reply_b="Paris."), vote("r6", "b", reply_a=" ")]
    out = tmp_path / "arena.jsonl"
    tally = write_pairs(votes, out)
    assert dict(tally) == {"pairs": 2, "tie": 1, "both_bad": 1, "same_replies": 1, "empty_reply": 1}
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["chosen"], r["rejected"], r["chosen_model"]) for r in records] == [
        ("Paris.", "Lyon.", "llm-lifecycle-sft/3"), ("Lyon.", "Paris.", "llm-lifecycle-dpo/1")]
    assert records[0]["prompt"] == [{"role": "user", "content": "Capital of France?"}]

    source = PreferenceSource(name="arena", format="pairs", uri=str(out), origin="arena")
    pairs = read_preferences(source).examples
    assert [(p.origin, p.chosen, p.rejected) for p in pairs] == [("arena", "Paris.", "Lyon."), ("arena", "Lyon.", "Paris.")]


# --- the page's API -------------------------------------------------------------------------------------------

def fake_chat(replies: dict[str, list[str]]):
    """chat_completion for model ids in `replies`: streams their chunks; other ids go to the real client."""
    real = openai_client.chat_completion

    def chat(base_url, model, messages, api_key_env=None, **sampling):
        if model not in replies:
            return real(base_url, model, messages, api_key_env, **sampling)
        return iter([SimpleNamespace(choices=[SimpleNamespace(delta=SimpleNamespace(content=text), finish_reason=None)])
                     for text in replies[model]] +
                    [SimpleNamespace(choices=[SimpleNamespace(delta=SimpleNamespace(content=None), finish_reason="stop")])])

    return chat


@pytest.fixture
def client_for(tmp_path, monkeypatch):
    def make(contestants: list[Contestant], **settings) -> tuple[TestClient, Arena]:
        monkeypatch.setattr(openai_client, "chat_completion", fake_chat({
            "sft-id": ["Bonjour", " <b>le</b>", " monde"], "dpo-id": ["<script>alert(1)</script>", " hi"]}))
        arena = Arena(contestants, VoteStore(sqlite_url(tmp_path / "votes.db")), Settings(**settings), seed=0)
        return TestClient(create_app(arena)), arena

    return make


SFT = Contestant("llm-lifecycle-sft", "3", "http://127.0.0.1:9/v1", "sft-id")
DPO = Contestant("llm-lifecycle-dpo", "1", "http://127.0.0.1:9/v1", "dpo-id")


def read_reply(client: TestClient, round_id: str, side: str) -> list[dict]:
    response = client.get(f"/api/rounds/{round_id}/{side}")
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/x-ndjson")
    return [json.loads(line) for line in response.text.splitlines()]


def test_a_round_streams_both_replies_then_a_vote_reveals_the_names_once(client_for):
    client, arena = client_for([SFT, DPO])
    page = client.get("/")
    assert "script-src 'self'" in page.headers["content-security-policy"] and "<textarea" in page.text
    round_id = client.post("/api/rounds", json={"prompt": "  Say hello  "}).json()["round_id"]
    lines = {side: read_reply(client, round_id, side) for side in ("a", "b")}
    for side, messages in lines.items():
        assert len([m for m in messages if "delta" in m]) >= 2 and messages[-1] == {"done": "stop"}
        assert not any(label in json.dumps(messages) for label in (SFT.label, DPO.label, "sft-id", "dpo-id"))
    assert client.get(f"/api/rounds/{round_id}/a").status_code == 409  # a side streams once

    revealed = client.post(f"/api/rounds/{round_id}/vote", json={"vote": "b"}).json()
    assert revealed["recorded"] and {revealed["model_a"], revealed["model_b"]} == {SFT.label, DPO.label}
    again = client.post(f"/api/rounds/{round_id}/vote", json={"vote": "a"}).json()
    assert (again["recorded"], again["vote"]) == (False, "b")
    stored = arena.store.votes()
    assert len(stored) == 1 and stored[0].prompt == "Say hello"
    assert {stored[0].reply_a, stored[0].reply_b} == {"Bonjour <b>le</b> monde", "<script>alert(1)</script> hi"}

    board = client.get("/api/leaderboard").json()
    assert board["total_votes"] == 1 and [row["votes"] for row in board["rows"]] == [1, 1]
    assert board["rows"][0]["model"] == (revealed["model_b"])


def test_bad_prompts_and_votes_are_refused_with_a_message(client_for):
    client, _ = client_for([SFT, DPO], max_prompt_chars=50)
    assert client.post("/api/rounds", json={"prompt": " \n "}).json() == {"error": "Write a prompt first: it is empty."}
    too_long = client.post("/api/rounds", json={"prompt": "x" * 51})
    assert too_long.status_code == 413 and "the limit is 50" in too_long.json()["error"]
    round_id = client.post("/api/rounds", json={"prompt": "hi"}).json()["round_id"]
    assert client.post(f"/api/rounds/{round_id}/vote", json={"vote": "maybe"}).status_code == 400
    early = client.post(f"/api/rounds/{round_id}/vote", json={"vote": "a"})
    assert early.status_code == 409 and "has not finished" in early.json()["error"]
    assert client.post("/api/rounds/nope/vote", json={"vote": "a"}).status_code == 404
    with pytest.raises(ArenaError, match="two different models"):
        Arena([SFT, SFT], None)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_model_server_that_is_down_or_stuck_fails_the_round_and_no_vote_is_recorded(client_for):
    silent = socket.socket()  # accepts connections (the backlog) and never answers: a stuck server
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    down = Contestant("down", "1", f"http://127.0.0.1:{closed_port()}/v1", "down-id")
    stuck = Contestant("stuck", "1", f"http://127.0.0.1:{silent.getsockname()[1]}/v1", "stuck-id")
    try:
        # a refused connection is retried twice by the openai client (≈ 2 s) before it gives up
        for broken, why, timeout_s in ((down, "could not be reached", 15), (stuck, "did not finish within 1 s", 1)):
            client, arena = client_for([SFT, broken], reply_timeout_s=timeout_s)
            round_id = client.post("/api/rounds", json={"prompt": "hi"}).json()["round_id"]
            messages = [read_reply(client, round_id, side) for side in ("a", "b")]
            failed = [m[-1]["error"] for m in messages if "error" in m[-1]]
            assert len(failed) == 1 and why in failed[0] and "No vote can be recorded" in failed[0]
            assert broken.model_id not in failed[0] and broken.base_url not in failed[0]
            refused = client.post(f"/api/rounds/{round_id}/vote", json={"vote": "a"})
            assert refused.status_code == 409 and why in refused.json()["error"]
            assert arena.store.count() == 0
    finally:
        silent.close()


def test_leaderboard_becomes_report_card_rows_for_the_scored_versions():
    from components.arena.ranking import score_rows

    votes = pd.DataFrame({"model_a": ["llm-lifecycle-sft/1"] * 30 + ["other/1"] * 5,
                          "model_b": ["llm-lifecycle-dpo/1"] * 30 + ["llm-lifecycle-sft/1"] * 5,
                          "vote": ["a"] * 20 + ["b"] * 10 + ["tie"] * 5})
    rows = score_rows(votes, {"llm-lifecycle-sft/1": "sft", "llm-lifecycle-dpo/1": "dpo"}, rounds=200)
    by_model = {row["model"]: row for row in rows}
    assert set(by_model) == {"sft", "dpo"}  # a contestant the report did not score adds no column
    assert by_model["sft"]["value"] > by_model["dpo"]["value"] and by_model["sft"]["n"] == 35
    for row in rows:
        assert row["measure"] == "arena_elo" and row["ci_low"] <= row["value"] <= row["ci_high"]
        assert row["chance"] == 1000 and len(row["items_digest"]) == 16
