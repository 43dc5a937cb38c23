"""Every preference pair in one shape: a prompt (messages ending with a user turn), the chosen and the rejected
reply, where it came from (source) and who labelled it (origin); ids that only the content decides."""
from __future__ import annotations

from dataclasses import dataclass

from components.preferences.readers import RawPair
from components.sft_data.examples import canonical, content_digest, normalise
from components.sft_data.readers import BadRecord

ORIGINS = ("human", "simulated", "arena")


@dataclass(frozen=True)
class Pair:
    id: str
    source: str
    origin: str  # ORIGINS: who said which reply is better
    prompt: list[dict]  # messages: an optional system turn, then user and assistant alternating, ending with user
    chosen: str
    rejected: str

    @property
    def prompt_id(self) -> str:
        """The prompt's digest, whatever the source: what the train/val split keeps on one side."""
        return prompt_id(self.prompt)

    @property
    def text(self) -> str:
        """The prompt's contents and both replies: what deduplication and decontamination compare."""
        return "\n".join([*(message["content"] for message in self.prompt), self.chosen, self.rejected])

    def conversation(self, reply: str) -> list[dict]:
        return [*self.prompt, {"role": "assistant", "content": reply}]


def make_pair(source: str, origin: str, raw: RawPair) -> Pair:
    """The turns as found in a record → a Pair; BadRecord names the first problem (an unknown role, an empty
    turn, turns out of order, the same reply twice)."""
    prompt_turns, chosen_turn, rejected_turn = raw
    chosen = normalise([*prompt_turns, chosen_turn])  # checks the turn order: the prompt ends with the user
    rejected = normalise([*prompt_turns, rejected_turn])[-1]["content"]
    prompt, chosen = chosen[:-1], chosen[-1]["content"]
    if chosen == rejected:
        raise BadRecord("same_replies", "the chosen and the rejected reply are the same")
    return Pair(pair_id(source, prompt, chosen, rejected), source, origin, prompt, chosen, rejected)


def pair_id(source: str, prompt: list[dict], chosen: str, rejected: str) -> str:
    """`<source>/<16 hex>`: the same pair from the same source always gets the same id."""
    return f"{source}/{content_digest(source, canonical([prompt, chosen, rejected]))}"


def prompt_id(prompt: list[dict]) -> str:
    return content_digest(canonical(prompt))
