"""Turn the files of one curated source into document texts, one format at a time, streaming.

Every reader takes an open file and yields texts; only what one document needs is held in memory (a
Gutenberg book without `split_chars` is one document, so it is held whole).
"""
from __future__ import annotations

import json
import re
import unicodedata
import zipfile
from collections.abc import Callable, Iterable, Iterator

# Project Gutenberg wraps every book in a license header and footer between these markers; older files
# have no space after the asterisks.
GUTENBERG_START = re.compile(r"^\*\*\*\s*START OF (THE|THIS) PROJECT GUTENBERG", re.IGNORECASE)
GUTENBERG_END = re.compile(r"^\*\*\*\s*END OF (THE|THIS) PROJECT GUTENBERG", re.IGNORECASE)
# Credits just inside the markers: boilerplate, not the book.
GUTENBERG_CREDITS = re.compile(r"^(Produced by|End of (the )?Project Gutenberg)", re.IGNORECASE)

WIKITEXT_TITLE = re.compile(r"^ = ([^=].*) = $")  # " = Title = "; sections are " = = Section = = "
WIKITEXT_JOINERS = {" @-@ ": "-", " @,@ ": ",", " @.@ ": "."}  # "0 @.@ 7" is 0.7, "red @-@ tipped" red-tipped
SPACE_BEFORE = re.compile(r" (?=[.,;:!?)\]%]|'(?:s|t|re|ve|ll|d|m)\b)")  # "city 's" "don 't" "( 24 in )"
SPACE_AFTER = re.compile(r"(?<=[(\[$]) ")
QUOTED = re.compile(r'" ([^"]*?) "')  # quotes paired on one line; unpaired ones are left as they are


def paragraphs(lines: Iterable[str]) -> Iterator[str]:
    """Blank-line separated blocks, line breaks inside kept (verse and plays need them)."""
    block: list[str] = []
    for line in lines:
        line = line.rstrip()
        if line:
            block.append(line)
        elif block:
            yield "\n".join(block)
            block = []
    if block:
        yield "\n".join(block)


def chunks(blocks: Iterable[str], split_chars: int | None) -> Iterator[str]:
    """Paragraphs joined into documents of at least `split_chars` characters (the last may be shorter);
    all of them into one document when split_chars is None."""
    chunk: list[str] = []
    size = 0
    for block in blocks:
        chunk.append(block)
        size += len(block) + 2 * (len(chunk) > 1)  # the "\n\n" that joins it to the previous block
        if split_chars is not None and size >= split_chars:
            yield "\n\n".join(chunk)
            chunk, size = [], 0
    if chunk:
        yield "\n\n".join(chunk)


def read_gutenberg(file, split_chars: int | None = None) -> Iterator[str]:
    lines = iter(file)
    if not any(GUTENBERG_START.match(line) for line in lines):  # consumes the header
        raise ValueError("no '*** START OF ... PROJECT GUTENBERG' marker: not a Gutenberg text?")
    body = _until(lines, GUTENBERG_END)  # the license footer after the marker is never read
    kept = (block for block in paragraphs(body) if not GUTENBERG_CREDITS.match(block))
    yield from chunks(kept, split_chars)


def read_text(file, split_chars: int | None = None) -> Iterator[str]:
    yield from chunks(paragraphs(file), split_chars)


def read_wikitext(file) -> Iterator[str]:
    """One document per article: the title, then each section heading and paragraph on its own."""
    article: list[str] = []
    for line in file:
        line = line.rstrip("\n")
        title = WIKITEXT_TITLE.match(line)
        if title and article:
            yield "\n\n".join(article)
            article = []
        if title:
            article.append(detokenize(title.group(1)))
        elif line.strip() and article:  # text before the first title belongs to no article
            article.append(detokenize(line.strip(" =")))  # " = = Section = = " -> "Section"
    if article:
        yield "\n\n".join(article)


def detokenize(text: str) -> str:
    """Undo WikiText's tokenization where it is unambiguous (<unk> stays: the word is gone)."""
    for token, char in WIKITEXT_JOINERS.items():
        text = text.replace(token, char)
    text = QUOTED.sub(r'"\1"', text)
    return SPACE_AFTER.sub("", SPACE_BEFORE.sub("", text))


def read_lines(file) -> Iterator[str]:
    for line in file:
        if line.strip():
            yield line.strip()


def read_jsonl(file) -> Iterator[str]:
    for number, line in enumerate(file, 1):
        if not line.strip():
            continue
        record = json.loads(line)
        if not isinstance(record.get("text"), str):
            raise ValueError(f"line {number}: no string 'text' field")
        yield record["text"]


def read_zip_txt(file) -> Iterator[str]:
    """Each .txt member is one document, in name order (zip needs a seekable file: local, s3 or HTTP ranges)."""
    with zipfile.ZipFile(file) as archive:
        for member in sorted(name for name in archive.namelist() if name.endswith(".txt")):
            yield decode(archive.read(member)).strip()


def decode(data: bytes) -> str:
    """UTF-8, else the legacy encoding that explains the bytes: some NLTK speeches carry Big5 (cp950) quotes
    and dashes, another a Windows-1252 "½¢"."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    try:
        text = data.decode("cp950")
        if all(char.isascii() or unicodedata.category(char)[0] in "PZ" for char in text):
            return text.replace("\u3000", " ")  # the ideographic space Big5 editors indent with
    except UnicodeDecodeError:
        pass
    return data.decode("cp1252", errors="replace")


# The format name, the mode its files are opened in, and its reader.
READERS: dict[str, tuple[str, Callable[..., Iterator[str]]]] = {
    "gutenberg": ("rt", read_gutenberg),
    "text": ("rt", read_text),
    "wikitext": ("rt", read_wikitext),
    "lines": ("rt", read_lines),
    "jsonl": ("rt", read_jsonl),
    "zip_txt": ("rb", read_zip_txt),
}
SPLITTABLE_FORMATS = {"gutenberg", "text"}  # whole files as documents: their readers take split_chars


def _until(lines: Iterator[str], marker: re.Pattern) -> Iterator[str]:
    for line in lines:
        if marker.match(line):
            return
        yield line
