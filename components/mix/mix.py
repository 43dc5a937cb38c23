"""Domain mixing: the pretraining set at requested per-domain shares, plus a small high-quality anneal set.

Two passes, so memory holds only per-document metadata (id, domain, size, quality), never the texts:
  1. plan     how often each document appears: a domain whose requested share exceeds its data is
              up-sampled by repetition (at most `max_repeat` epochs), one with more data than it needs is
              down-sampled by a deterministic selection (a seeded hash of the id, not file order)
  2. write    stream the documents again and write each as often as planned (the training loader
              shuffles, by seed and step, so the mix keeps input order)
Shares are of characters. Requested, effective (renormalised over domains that have data, and capped where
even `max_repeat` epochs cannot fill a share) and realised shares are reported side by side.
"""
from __future__ import annotations

import hashlib
import math

import pandas as pd
from pydantic import Field, model_validator

from components.params import StrictModel


class AnnealParams(StrictModel):
    fraction: float = Field(0.05, gt=0, le=1, description="anneal set size, as a share of the pretraining chars")
    sources: list[str] = Field(["wikipedia", "wikitext"], description="curated sources that qualify")
    min_quality: float = Field(0.9, ge=0, le=1, description="web documents at or above this score qualify")


class MixParams(StrictModel):
    weights: dict[str, float] = Field(description="domain → share of the pretraining characters")
    max_repeat: int = Field(4, ge=1, description="most epochs of any one document (up-sampling cap)")
    total_chars: int | None = Field(None, gt=0, description="pretraining size; None: one epoch's worth of everything")
    tolerance: float = Field(0.05, gt=0, lt=1, description="allowed |realised - effective| share per domain")
    shard_docs: int = Field(10_000, gt=0)
    seed: int = 1
    anneal: AnnealParams = AnnealParams()

    @model_validator(mode="after")
    def _weights_are_shares(self):
        if any(w < 0 for w in self.weights.values()) or not math.isclose(sum(self.weights.values()), 1, abs_tol=1e-6):
            raise ValueError(f"weights must be non-negative and sum to 1 (they sum to {sum(self.weights.values()):g})")
        return self


def plan(meta: pd.DataFrame, params: MixParams) -> tuple[pd.Series, pd.DataFrame]:
    """meta: one row per document (id, domain, chars). Returns (copies per document id, the proportions table)."""
    available = meta.groupby("domain")["chars"].sum()
    total = params.total_chars or int(available.sum())  # default: as many characters as one epoch of everything
    effective = _effective_shares(params.weights, available, total, params.max_repeat)
    copies = pd.Series(0, index=meta["id"].to_numpy(), dtype="int64")
    for domain, share in effective.items():
        docs = meta[meta["domain"] == domain]
        copies.update(_copies_for(docs, share * total, params))
    table = _proportions(meta, copies, params.weights, effective)
    return copies, table


def _effective_shares(weights: dict, available: pd.Series, total: int, max_repeat: int) -> dict[str, float]:
    """The requested shares, renormalised over domains that have data; a domain that cannot fill its share
    even at max_repeat epochs is capped there and the others grow in proportion (water-filling)."""
    wanted = {d: w for d, w in weights.items() if w > 0 and available.get(d, 0) > 0}
    if not wanted:
        raise ValueError(f"no documents in any weighted domain; domains with data: {', '.join(available.index)}")
    capped: dict[str, float] = {}
    while True:
        free = 1 - sum(capped.values())
        open_weight = sum(w for d, w in wanted.items() if d not in capped)
        shares = {d: capped.get(d, free * w / open_weight if open_weight else 0) for d, w in wanted.items()}
        over = {d: available[d] * max_repeat / total for d, s in shares.items()
                if d not in capped and s * total > available[d] * max_repeat}
        if not over:
            return shares
        capped.update(over)
        if len(capped) == len(wanted):
            raise ValueError(f"total_chars={total:,} is more than max_repeat={max_repeat} epochs of the data allow")


def _copies_for(docs: pd.DataFrame, target_chars: float, params: MixParams) -> pd.Series:
    """Whole epochs while they fit, then a seeded selection of documents for the remainder."""
    available = docs["chars"].sum()
    epochs = min(int(target_chars // available), params.max_repeat)
    remainder = target_chars - epochs * available if epochs < params.max_repeat else 0
    order = docs.assign(rank=docs["id"].map(lambda i: _hash(params.seed, i))).sort_values("rank")
    # take documents while the total gets closer to the remainder (the one that crosses it only if that helps)
    before = order["chars"].cumsum() - order["chars"]
    extra = (before + order["chars"] / 2) < remainder
    counts = pd.Series(epochs, index=order["id"].to_numpy(), dtype="int64")
    counts[extra.to_numpy()] += 1
    return counts


def _proportions(meta: pd.DataFrame, copies: pd.Series, requested: dict, effective: dict) -> pd.DataFrame:
    chars = meta.set_index("id")["chars"] * copies.reindex(meta["id"]).to_numpy()
    realised = chars.groupby(meta.set_index("id")["domain"]).sum()
    rows = [{"domain": d, "requested": requested.get(d, 0.0), "effective": effective.get(d, 0.0),
             "realised": float(realised.get(d, 0) / max(realised.sum(), 1)), "chars": int(realised.get(d, 0)),
             "documents": int((copies.reindex(meta.loc[meta["domain"] == d, "id"]) > 0).sum())}
            for d in sorted(set(requested) | set(realised.index))]
    table = pd.DataFrame(rows)
    table["deviation"] = (table["realised"] - table["effective"]).abs()
    return table


def anneal_ids(meta: pd.DataFrame, pretrain_chars: int, params: MixParams) -> list[str]:
    """The highest-quality documents (listed curated sources, or web documents above min_quality), chosen in
    seeded order up to `fraction` of the pretraining size. They may also appear in the pretraining set."""
    a = params.anneal
    eligible = meta[meta["source"].isin(a.sources) | (meta["quality"].fillna(0) >= a.min_quality)]
    order = eligible.assign(rank=eligible["id"].map(lambda i: _hash(params.seed, i))).sort_values("rank")
    within = (order["chars"].cumsum() - order["chars"]) < a.fraction * pretrain_chars
    return order.loc[within, "id"].tolist()


def _hash(seed: int, key: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest(), "big")
