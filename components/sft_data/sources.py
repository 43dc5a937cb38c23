"""Reading one instruction-data source: its files, their records, and the examples they become, with a tally
per file (for the manifest and lineage) and every bad record (for the report)."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from itertools import islice

from components.curated import _open_files  # the curated sources' URI, glob and decompression handling
from components.sft_data.examples import Example, example_id, normalise
from components.sft_data.params import DataSource, SftSource
from components.sft_data.readers import FORMATS, BadFile, BadRecord, json_records


class SftDataError(ValueError):
    """Input the stage cannot use; the message names the file and the line."""


@dataclass
class SourceRead:
    name: str
    examples: list = field(default_factory=list)  # what the source's records became: Examples, pairs
    files: list[dict] = field(default_factory=list)  # {url, records, examples, bad_records}, in reading order
    bad_records: list[dict] = field(default_factory=list)  # {source, file, line, reason, message}


def read_source(source: SftSource, on_bad_record: str = "error", section: str = "sft_data",
                error: type[ValueError] = SftDataError) -> SourceRead:
    """Every example of the source, in file order, at most `max_examples`. A bad record raises `error`
    (on_bad_record "error") or is tallied in `bad_records` ("count"); a file that is not JSON always raises.
    `section`, `error`: the stage that reads it (the preferences stage reads prompts this way)."""
    return read_records(source, partial(_record_examples, source), on_bad_record, section, error)


def read_records(source: DataSource, convert: Callable[[dict], list], on_bad_record: str = "error",
                 section: str = "sft_data", error: type[ValueError] = SftDataError) -> SourceRead:
    """What `convert` makes of each record (a JSON object) of the source's files, in file order, at most
    `source.max_examples` items. A record `convert` rejects with BadRecord raises `error`, naming the file, the
    line and the `section` whose on_bad_record would count it instead ("error"), or is tallied in
    `bad_records` ("count"); a file that is not JSON always raises."""
    read = SourceRead(source.name)
    read.examples = list(islice(_items(source, convert, on_bad_record, section, error, read), source.max_examples))
    return read


def _items(source: DataSource, convert: Callable[[dict], list], on_bad_record: str, section: str,
           error: type[ValueError], read: SourceRead) -> Iterator:
    for opened in _open_files(source.uri, "rt"):
        url = opened.full_name.removeprefix("file://")
        tally = {"url": url, "records": 0, "examples": 0, "bad_records": 0}
        read.files.append(tally)
        for line, record in _records(opened, url, error):
            tally["records"] += 1
            try:
                items = convert(_object(record))
            except BadRecord as bad:
                if on_bad_record == "error":
                    raise error(f"{url}: line {line}: {bad} (set {section}.on_bad_record: count to drop such "
                                f"records and list them in the report)") from None
                tally["bad_records"] += 1
                read.bad_records.append({"source": source.name, "file": url, "line": line, "reason": bad.reason,
                                         "message": str(bad)})
                continue
            for item in items:
                tally["examples"] += 1
                yield item


def _records(opened, url: str, error: type[ValueError]) -> Iterator[tuple[int, object]]:
    with opened as file:
        try:
            yield from json_records(file)
        except BadFile as bad:
            raise error(f"{url}: {bad.where}: {bad}") from None


def _object(record) -> dict:
    if isinstance(record, BadRecord):  # a malformed JSON line
        raise record
    if not isinstance(record, dict):
        raise BadRecord("not_an_object", f"a record is a JSON object, not {type(record).__name__}")
    return record


def _record_examples(source: SftSource, record: dict) -> list[Example]:
    """All or nothing: a record whose second instance is bad gives no example at all."""
    conversations = [normalise(turns) for turns in FORMATS[source.format](record)]
    return [Example(example_id(source.name, messages), source.name, messages) for messages in conversations]
