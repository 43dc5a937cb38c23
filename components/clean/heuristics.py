"""The published heuristic quality filters, with datatrove's rules and default thresholds:
GopherQuality and GopherRepetition (Rae et al. 2021, appendix A1), C4Quality (Raffel et al. 2020, section 2.2,
tfds c4_utils.clean_page), C4BadWords (the same paper's bad-words rule, tfds c4_utils.get_badwords_filter_fn),
FineWebQuality (Penedo et al. 2024).
FineWeb ran GopherRepetition, GopherQuality, C4Quality(filter_no_terminal_punct=False), FineWebQuality.

Every threshold is a field and None turns its rule off. A removal returns the rule; the runner adds the step name.
Words come from a regex (WORD), not datatrove's NLTK Treebank tokenizer: letters and digits joined by - ' ’ . ,
stay one word ("don't", "3.5", "1,000"; NLTK splits "do|n't") and a run of symbols is one token ("...", "?!").
"""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator
from itertools import accumulate
from pathlib import Path

from pydantic import Field, model_validator

from components.clean.doc import Doc, Filter
from components.clean.steps import REMOVAL_DETAIL
from components.params import StrictModel

WORD = re.compile(r"\w+(?:[-'’.,]\w+)*|[^\w\s]+")  # a word, or a run of punctuation and symbols


def is_word(token: str) -> bool:
    return token[0].isalnum() or token[0] == "_"  # not a run of punctuation or symbols


def ratio(part: float, whole: float) -> float:
    return part / whole if whole else 0.0


def below(value: float, threshold: float | None) -> bool:
    return threshold is not None and value < threshold


def above(value: float, threshold: float | None) -> bool:
    return threshold is not None and value > threshold


def first_failed(checks: Iterable[tuple[str, bool]]) -> str | None:
    """The first rule that fails; `checks` is a generator, so the rules after it are not even computed."""
    return next((rule for rule, failed in checks if failed), None)


class RuleFilter(Filter):
    """A filter made of named rules: `checks(text)` yields (rule, failed) pairs; the first failure removes."""

    def __init__(self, params):
        self.params = params

    def __call__(self, doc: Doc) -> str | None:
        return first_failed(self.checks(doc.text)) if self.params.enabled else None

    def checks(self, text: str) -> Iterator[tuple[str, bool]]:
        raise NotImplementedError


# -- Gopher quality ---------------------------------------------------------------------------------------------

STOP_WORDS = ["the", "be", "to", "of", "and", "that", "have", "with"]  # Gopher's list; matched case-sensitively
BULLETS = ("•", "-")  # Gopher names "•"; datatrove adds "-", the bullet trafilatura writes for list items
ELLIPSES = ("...", "…")


class GopherQualityParams(StrictModel):
    enabled: bool = True
    min_doc_words: int | None = 50
    max_doc_words: int | None = 100_000
    min_avg_word_length: float | None = 3
    max_avg_word_length: float | None = 10
    max_hash_word_ratio: float | None = 0.1  # "#" per token
    max_ellipsis_word_ratio: float | None = 0.1  # "..." or "…" per token
    max_bullet_lines_ratio: float | None = 0.9  # lines starting with a bullet
    max_ellipsis_lines_ratio: float | None = 0.3  # lines ending with an ellipsis
    min_alpha_words_ratio: float | None = 0.8  # tokens with a letter; datatrove's max_non_alpha_words_ratio
    min_stop_words: int | None = 2  # distinct stop words present (Gopher: "at least two of"; datatrove too)
    stop_words: list[str] = STOP_WORDS


class GopherQuality(RuleFilter):
    """Rules: the name of the field whose threshold the document crosses (e.g. "min_doc_words")."""

    name = "gopher_quality"

    def __init__(self, params: GopherQualityParams = GopherQualityParams()):
        super().__init__(params)
        self.stop_words = frozenset(params.stop_words)

    def checks(self, text: str) -> Iterator[tuple[str, bool]]:
        p = self.params
        tokens = WORD.findall(text)
        words = [t for t in tokens if is_word(t)]
        # Counts and lengths are over words; the symbol ratios divide by all tokens, as datatrove's do.
        yield "min_doc_words", below(len(words), p.min_doc_words)
        yield "max_doc_words", above(len(words), p.max_doc_words)
        avg_length = ratio(sum(map(len, words)), len(words))
        yield "min_avg_word_length", below(avg_length, p.min_avg_word_length)
        yield "max_avg_word_length", above(avg_length, p.max_avg_word_length)
        yield "max_hash_word_ratio", above(ratio(text.count("#"), len(tokens)), p.max_hash_word_ratio)
        ellipses = sum(text.count(e) for e in ELLIPSES)
        yield "max_ellipsis_word_ratio", above(ratio(ellipses, len(tokens)), p.max_ellipsis_word_ratio)
        lines = text.splitlines()
        bullet_lines = sum(line.lstrip().startswith(BULLETS) for line in lines)
        yield "max_bullet_lines_ratio", above(ratio(bullet_lines, len(lines)), p.max_bullet_lines_ratio)
        ellipsis_lines = sum(line.rstrip().endswith(ELLIPSES) for line in lines)
        yield "max_ellipsis_lines_ratio", above(ratio(ellipsis_lines, len(lines)), p.max_ellipsis_lines_ratio)
        alpha_tokens = sum(any(c.isalpha() for c in t) for t in tokens)
        yield "min_alpha_words_ratio", below(ratio(alpha_tokens, len(tokens)), p.min_alpha_words_ratio)
        yield "min_stop_words", below(len(self.stop_words.intersection(tokens)), p.min_stop_words)


# -- Gopher repetition ------------------------------------------------------------------------------------------

PARAGRAPH_BREAK = re.compile(r"\n{2,}")
LINE_BREAK = re.compile(r"\n+")


class GopherRepetitionParams(StrictModel):
    """Table A1 of the Gopher paper. dup_line_frac and dup_para_frac count items; the others count characters."""

    enabled: bool = True
    dup_para_frac: float | None = 0.3
    dup_para_char_frac: float | None = 0.2
    dup_line_frac: float | None = 0.3
    dup_line_char_frac: float | None = 0.2
    top_n_grams: dict[int, float] = {2: 0.2, 3: 0.18, 4: 0.16}  # chars in the most frequent n-gram
    dup_n_grams: dict[int, float] = {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10}  # chars in repeats


class GopherRepetition(RuleFilter):
    """Rules: "dup_para_frac", "dup_para_char_frac", "dup_line_frac", "dup_line_char_frac", "top_{n}_gram",
    "duplicated_{n}_n_grams" (datatrove's names; a rule is off when its field is None or its n is left out)."""

    name = "gopher_repetition"

    def __init__(self, params: GopherRepetitionParams = GopherRepetitionParams()):
        super().__init__(params)

    def checks(self, text: str) -> Iterator[tuple[str, bool]]:
        p, n_chars = self.params, len(text)
        paragraphs = PARAGRAPH_BREAK.split(text.strip())
        dups, dup_chars = duplicates(paragraphs)
        yield "dup_para_frac", above(ratio(dups, len(paragraphs)), p.dup_para_frac)
        yield "dup_para_char_frac", above(ratio(dup_chars, n_chars), p.dup_para_char_frac)
        lines = LINE_BREAK.split(text)
        dups, dup_chars = duplicates(lines)
        yield "dup_line_frac", above(ratio(dups, len(lines)), p.dup_line_frac)
        yield "dup_line_char_frac", above(ratio(dup_chars, n_chars), p.dup_line_char_frac)
        words = WORD.findall(text)
        for n, threshold in sorted(p.top_n_grams.items()):
            yield f"top_{n}_gram", above(ratio(top_n_gram_chars(words, n), n_chars), threshold)
        for n, threshold in sorted(p.dup_n_grams.items()):
            yield f"duplicated_{n}_n_grams", above(ratio(duplicated_n_gram_chars(words, n), n_chars), threshold)


def duplicates(items: list[str]) -> tuple[int, int]:
    """How many items repeat an earlier one, and their characters (the first occurrence is not counted)."""
    seen, count, chars = set(), 0, 0
    for item in items:
        if item in seen:
            count, chars = count + 1, chars + len(item)
        else:
            seen.add(item)
    return count, chars


def top_n_gram_chars(words: list[str], n: int) -> int:
    """Characters covered by the most frequent n-gram: its length (words joined by spaces) times its count."""
    counts = Counter(zip(*(words[i:] for i in range(n))))
    if not counts:
        return 0
    gram, count = counts.most_common(1)[0]  # ties go to the first seen, as in datatrove
    return (sum(map(len, gram)) + n - 1) * count


def duplicated_n_gram_chars(words: list[str], n: int) -> int:
    """Characters of the words in n-grams that repeat an earlier one; a counted n-gram's words are skipped, so
    overlapping repeats count once (datatrove's find_all_duplicate: spaces are not counted)."""
    ends = [0, *accumulate(map(len, words))]  # chars of words[i:j] = ends[j] - ends[i]
    seen, chars, i = set(), 0, 0
    while i <= len(words) - n:
        gram = tuple(words[i : i + n])
        if gram in seen:
            chars += ends[i + n] - ends[i]
            i += n
        else:
            seen.add(gram)
            i += 1
    return chars


# -- C4 ---------------------------------------------------------------------------------------------------------

CITATION = re.compile(r"\[\d*]|\[edit]|\[citation needed]")  # Wikipedia's, left behind by extraction
END_PUNCTUATION = (".", "?", "!", '"', "'")
SENTENCE_END = re.compile(r"[.!?]+['\"”’)\]]*(?=\s|$)")
DROP_LINE = "drop_line"
POLICY_SUBSTRINGS = ["terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies"]


class C4QualityParams(StrictModel):
    enabled: bool = True
    remove_citations: bool = True
    filter_no_terminal_punct: bool = True  # drop lines not ending in . ? ! " ' (or ending in "...")
    min_words_per_line: int | None = 3  # drop shorter lines
    max_word_length: int | None = 1000  # drop lines with a longer word (minified code, base64)
    filter_lorem_ipsum: bool = True  # remove the document
    filter_javascript: bool = True  # drop lines mentioning javascript ("please enable JavaScript")
    filter_curly_bracket: bool = True  # remove the document: code
    filter_policy: bool = True  # drop lines containing one of policy_substrings (cookie banners, footers)
    policy_substrings: list[str] = POLICY_SUBSTRINGS
    min_num_sentences: int | None = 5  # remove the document if fewer sentences remain


class C4Quality(Filter):
    """Drops lines as C4 did and keeps the rest as doc.text. Rules: "lorem_ipsum", "curly_bracket" (on lines that
    survive the line rules before them, as in C4), "too_few_sentences". Sentences are counted by SENTENCE_END, where
    datatrove uses NLTK's punkt, which knows abbreviations: "Mr. Smith" is two sentences here, one there."""

    name = "c4"

    def __init__(self, params: C4QualityParams = C4QualityParams()):
        self.params = params
        self.policy = tuple(s.lower() for s in params.policy_substrings) if params.filter_policy else ()

    def __call__(self, doc: Doc) -> str | None:
        p = self.params
        if not p.enabled:
            return None
        kept, sentences = [], 0
        for line in doc.text.splitlines():
            line, verdict = self.clean_line(line.strip())
            if verdict == DROP_LINE:
                continue
            if verdict is not None:
                return verdict
            kept.append(line)
            sentences += max(1, len(SENTENCE_END.findall(line)))  # a line kept without end punctuation is one
        if below(sentences, p.min_num_sentences):
            return "too_few_sentences"
        doc.text = "\n".join(kept).strip()
        return None

    def clean_line(self, line: str) -> tuple[str, str | None]:
        """The line (citations removed) and None to keep it, DROP_LINE, or the rule that removes the document.
        The order is C4's (words are counted before citations are removed)."""
        p = self.params
        words = line.split()
        if p.max_word_length is not None and any(len(w) > p.max_word_length for w in words):
            return line, DROP_LINE
        if p.remove_citations:
            line = CITATION.sub("", line)
        if p.filter_no_terminal_punct and (not line.endswith(END_PUNCTUATION) or line.endswith("...")):
            return line, DROP_LINE
        if below(len(words), p.min_words_per_line):
            return line, DROP_LINE
        lower = line.lower()
        if p.filter_lorem_ipsum and "lorem ipsum" in lower:
            return line, "lorem_ipsum"
        if p.filter_javascript and "javascript" in lower:
            return line, DROP_LINE
        if p.filter_curly_bracket and "{" in line:
            return line, "curly_bracket"
        if any(s in lower for s in self.policy):
            return line, DROP_LINE
        return line, None


# -- C4 bad words -----------------------------------------------------------------------------------------------

LDNOOBW_DIR = Path(__file__).with_name("ldnoobw")  # the LDNOOBW lists C4 used (CC BY 4.0, see its README.md)
UNSEGMENTED = ("ja", "th", "zh")  # written without spaces: C4 matches their words anywhere, not between non-words
# Common subwords that C4 (tfds) and datatrove allow: each alone removes > 10% of the pages of its language.
ALLOWLIST = {"ja": {"sm", "グロ", "女の子"}, "zh": {"性"}}


def list_files(lists_dir: Path, language: str) -> list[Path]:
    """`<language>.txt` and its regional files (`fr-CA-u-sd-caqc.txt` counts as French, as in C4)."""
    files = sorted({*lists_dir.glob(f"{language}.txt"), *lists_dir.glob(f"{language}-*.txt")})
    if not files:
        available = sorted(p.stem for p in lists_dir.glob("*.txt"))
        raise ValueError(f"no bad-words list for language {language!r} in {lists_dir} (expected {language}.txt; "
                         f"available: {', '.join(available) or 'none'}): fix clean.c4_badwords.languages or lists_dir")
    return files


def read_badwords(lists_dir: Path, language: str) -> set[str]:
    words = {line.strip() for path in list_files(lists_dir, language)
             for line in path.read_text(encoding="utf-8").splitlines()}
    # An empty entry would match every text; an allowed subword is not a bad word.
    return words - {""} - ALLOWLIST.get(language, set())


def badwords_pattern(language: str, words: set[str]) -> re.Pattern:
    """C4's regex, its alternation of the words written as a trie: the same matches, several times faster (Python's
    re tries every alternative of a flat alternation at every position)."""
    alternatives = trie_regex(sorted(words))
    if language in UNSEGMENTED:
        return re.compile(f"({alternatives})")
    return re.compile(rf"(?:\W|^)({alternatives})(?:\W|$)")  # group 1: the word, without its flanks


def trie_regex(words: list[str]) -> str:
    """An alternation matching exactly `words` (non-empty strings), sharing common prefixes: ["ab", "ac"] → a(?:b|c)."""
    branches = {}
    for word in words:
        branches.setdefault(word[0], []).append(word[1:])
    parts = []
    for first, rests in sorted(branches.items()):
        ends_here = "" in rests
        rest = [r for r in rests if r]
        if not rest:
            parts.append(re.escape(first))
            continue
        tail = trie_regex(rest)
        parts.append(f"{re.escape(first)}(?:{tail}){'?' if ends_here else ''}")
    return "|".join(parts)


class C4BadWordsParams(StrictModel):
    enabled: bool = True
    languages: list[str] = Field(
        ["en"], description="languages whose list applies, matched against the language step's ISO 639-1 code; a "
        "document in another language is kept (C4: English only; mC4: all 28 LDNOOBW languages)")
    lists_dir: Path | None = Field(None, description="folder of <language>.txt lists, one word or phrase per line "
                                                     "(null: the LDNOOBW lists shipped in components/clean/ldnoobw)")

    @model_validator(mode="after")
    def _lists_exist(self) -> C4BadWordsParams:
        """A language without a list fails when the parameters are read, not hours into a run."""
        for language in self.languages if self.enabled else []:
            list_files(self.lists_dir or LDNOOBW_DIR, language)
        return self


class C4BadWords(Filter):
    """Removes a document in which any word of its language's list occurs, as C4 did: on the lower-cased text,
    whole words only (flanked by non-word characters or the text's ends), except in Japanese, Thai and Chinese,
    where a list entry anywhere counts. Rule: "badwords_<language>"."""

    name = "c4_badwords"

    def __init__(self, params: C4BadWordsParams = C4BadWordsParams()):
        self.params = params
        lists_dir = params.lists_dir or LDNOOBW_DIR
        self.patterns = {lang: badwords_pattern(lang, read_badwords(lists_dir, lang)) for lang in params.languages}

    def __call__(self, doc: Doc) -> str | None:
        language = str(doc.meta.get("language", "")).split("-")[0]
        pattern = self.patterns.get(language)
        found = pattern.search(doc.text.lower()) if pattern is not None else None
        if found is None:
            return None
        doc.meta[REMOVAL_DETAIL] = f"matched {found.group(1)!r}"  # the audit row says which word
        return f"badwords_{language}"


# -- FineWeb ----------------------------------------------------------------------------------------------------

STOP_CHARS = (".", "'", '"', "!", "?")


class FineWebQualityParams(StrictModel):  # fields named after their rule; ours compare with <=, >= (datatrove 0.10.1: <, >)
    enabled: bool = True
    line_punct_ratio: float | None = 0.12  # remove if at most this share of lines ends in STOP_CHARS
    line_punct_exclude_zero: bool = False  # ...unless the share is 0 (pages without punctuation, e.g. poems)
    short_line_ratio: float | None = 0.67  # remove if at least this share of lines is short
    short_line_length: int = 30  # chars
    char_dup_ratio: float | None = 0.01  # remove if at least this share of chars is in repeated lines
    list_ratio: float | None = 0.3  # remove if there are more newlines per word (lists, menus)


class FineWebQuality(RuleFilter):
    """Rules: "line_punct_ratio", "short_line_ratio", "char_dup_ratio", "list_ratio"."""

    name = "fineweb"

    def __init__(self, params: FineWebQualityParams = FineWebQualityParams()):
        super().__init__(params)

    def checks(self, text: str) -> Iterator[tuple[str, bool]]:
        p = self.params
        lines = text.split("\n")
        punct = ratio(sum(line.endswith(STOP_CHARS) for line in lines), len(lines))
        excused = punct == 0 and p.line_punct_exclude_zero
        yield "line_punct_ratio", p.line_punct_ratio is not None and punct <= p.line_punct_ratio and not excused
        short = ratio(sum(len(line) <= p.short_line_length for line in lines), len(lines))
        yield "short_line_ratio", p.short_line_ratio is not None and short >= p.short_line_ratio
        dup_chars = duplicates([line for line in lines if line.strip()])[1]
        dup = ratio(dup_chars, len(text) - text.count("\n"))
        yield "char_dup_ratio", p.char_dup_ratio is not None and dup >= p.char_dup_ratio
        yield "list_ratio", above(ratio(text.count("\n"), len(WORD.findall(text))), p.list_ratio)
