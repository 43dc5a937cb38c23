"""The arena: people chat with two anonymous models side by side and vote; the votes rank the models and become
preference pairs for the reward model and DPO.

- ranking.py: Bradley-Terry scores on the Elo scale (Chatbot Arena's computation), bootstrap intervals, win
  rates and vote counts; plot.py: the leaderboard as a figure;
- pairing.py: which two models the next round compares (close and under-sampled pairs first);
- store.py: the votes in SQLite or PostgreSQL, one transaction each, one per round;
- export.py: decisive votes → `pairs`-format records with origin `arena`.

The web page and the `llm-lifecycle arena` command are in infra/arena.py.
"""
from components.arena.export import preference_record, write_pairs
from components.arena.pairing import choose_pair, pair_weights
from components.arena.ranking import VOTES, Leaderboard, bootstrap_intervals, bradley_terry, leaderboard
from components.arena.store import Vote, VoteStore, contestant, sqlite_url

__all__ = ["VOTES", "Leaderboard", "Vote", "VoteStore", "bootstrap_intervals", "bradley_terry", "choose_pair",
           "contestant", "leaderboard", "pair_weights", "preference_record", "sqlite_url", "write_pairs"]
