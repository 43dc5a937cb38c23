"""Reading one preference source: its files and records (the instruction data's reader loop, bad-record policy
and per-file tally, components/sft_data/sources.py) made into pairs."""
from __future__ import annotations

from functools import partial

from components.preferences.pairs import Pair, make_pair
from components.preferences.params import PreferenceSource
from components.preferences.readers import FORMATS
from components.sft_data.sources import SourceRead, read_records

SECTION = "preferences"


class PreferenceDataError(ValueError):
    """Input the stage cannot use; the message names the file and the line."""


def read_preferences(source: PreferenceSource, on_bad_record: str = "error") -> SourceRead:
    """Every pair of the source, in file order, at most `max_examples`. A bad record raises PreferenceDataError
    (on_bad_record "error") or is tallied in `bad_records` ("count"); a file that is not JSON always raises."""
    return read_records(source, partial(_record_pairs, source), on_bad_record, SECTION, PreferenceDataError)


def _record_pairs(source: PreferenceSource, record: dict) -> list[Pair]:
    """All or nothing: a tree with one bad pair gives no pair at all."""
    options = {"max_pairs_per_prompt": source.max_pairs_per_prompt} if source.format == "oasst" else {}
    return [make_pair(source.name, source.origin, raw) for raw in FORMATS[source.format](record, **options)]
