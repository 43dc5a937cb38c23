"""The vote store: one table, one row per completed round that got a vote, in SQLite (a file, the default) or
PostgreSQL (`postgresql+psycopg2://USER:PASSWORD@HOST/DB`), through SQLAlchemy Core.

Each vote is one INSERT in its own transaction: it is stored whole or not at all, and a crash of the page or
of a model server leaves no half row. The round id is unique, so a vote submitted twice (a double click, a
retried request) is stored, and counted, once.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
from sqlalchemy import (CheckConstraint, Column, DateTime, Integer, MetaData, String, Table, Text, create_engine,
                        event, func, insert, select)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from components.arena.ranking import VOTES

metadata = MetaData()
votes_table = Table(
    "arena_votes", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("round_id", String(64), nullable=False, unique=True),
    Column("prompt", Text, nullable=False),
    Column("model_a", String(255), nullable=False),
    Column("version_a", String(255), nullable=False),
    Column("reply_a", Text, nullable=False),
    Column("model_b", String(255), nullable=False),
    Column("version_b", String(255), nullable=False),
    Column("reply_b", Text, nullable=False),
    Column("vote", String(16), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    CheckConstraint(f"vote IN ({', '.join(repr(v) for v in VOTES)})", name="known_vote"),
)


@dataclass(frozen=True)
class Vote:
    """One round's vote: side A's and side B's model (name and version) and reply, and which side won."""

    round_id: str
    prompt: str
    model_a: str
    version_a: str
    reply_a: str
    model_b: str
    version_b: str
    reply_b: str
    vote: str  # a | b | tie | both_bad
    created_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))

    @property
    def contestant_a(self) -> str:
        return contestant(self.model_a, self.version_a)

    @property
    def contestant_b(self) -> str:
        return contestant(self.model_b, self.version_b)


def contestant(model: str, version: str) -> str:
    """What the leaderboard ranks: a model at one version (`llm-lifecycle-sft/3`)."""
    return f"{model}/{version}"


class VoteStore:
    def __init__(self, url: str):
        self.engine = _engine(url)
        metadata.create_all(self.engine)

    def record(self, vote: Vote) -> bool:
        """Store `vote` in one transaction; False (and nothing written) when its round already has a vote."""
        if vote.vote not in VOTES:
            raise ValueError(f"unknown vote {vote.vote!r}; votes are {', '.join(VOTES)}")
        try:
            with self.engine.begin() as connection:
                connection.execute(insert(votes_table).values(**asdict(vote)))
        except IntegrityError:
            if self.find(vote.round_id) is None:  # another constraint broke: not a double submit
                raise
            return False
        return True

    def find(self, round_id: str) -> Vote | None:
        with self.engine.connect() as connection:
            row = connection.execute(select(votes_table).where(votes_table.c.round_id == round_id)).mappings().first()
        return _vote(row) if row else None

    def votes(self) -> list[Vote]:
        """Every vote, oldest first."""
        with self.engine.connect() as connection:
            rows = connection.execute(select(votes_table).order_by(votes_table.c.id)).mappings().all()
        return [_vote(row) for row in rows]

    def count(self) -> int:
        with self.engine.connect() as connection:
            return connection.execute(select(func.count()).select_from(votes_table)).scalar_one()

    def battles(self) -> pd.DataFrame:
        """The votes as the ranking reads them: model_a, model_b (contestants), vote."""
        columns = [votes_table.c[name] for name in ("model_a", "version_a", "model_b", "version_b", "vote")]
        with self.engine.connect() as connection:
            rows = connection.execute(select(*columns).order_by(votes_table.c.id)).all()
        return pd.DataFrame({"model_a": [contestant(r.model_a, r.version_a) for r in rows],
                             "model_b": [contestant(r.model_b, r.version_b) for r in rows],
                             "vote": [r.vote for r in rows]}, columns=["model_a", "model_b", "vote"])

    def close(self) -> None:
        self.engine.dispose()


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{Path(path).resolve()}"


def _engine(url: str) -> Engine:
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True)  # a restarted PostgreSQL: reconnect, do not fail a vote
    if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    # voters write at the same time: wait for the lock (30 s) rather than fail with "database is locked"
    engine = create_engine(url, connect_args={"timeout": 30})
    event.listen(engine, "connect", _wal)
    return engine


def _wal(connection, _record) -> None:
    """Readers (the leaderboard) do not block the writer, nor it them; synchronous=FULL: a committed vote
    survives a power cut."""
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.close()


def _vote(row) -> Vote:
    values = {name: row[name] for name in Vote.__dataclass_fields__}
    created = values["created_at"]
    if created.tzinfo is None:  # SQLite keeps no time zone: every timestamp was written in UTC
        values["created_at"] = created.replace(tzinfo=timezone.utc)
    return Vote(**values)
