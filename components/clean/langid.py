"""Language identification with lingua (its n-gram models ship inside the wheel: no download, works offline).

Measured on the 162 pages trafilatura extracts from html/trafilatura-eval (6,000 chars on average), one core,
models loaded (lingua loads a language's models the first time it needs them):
- default (75 languages, high accuracy, first 2,000 chars): 160-200 docs/s, 0.9 GB, 6.5 s to load all models;
- low_accuracy: ~165 docs/s (no faster on texts this long), 95 MB, 1.3 s to load;
- 10 candidates (en ja de fr es zh it pt nl ru): ~930 docs/s, 220 MB;
- max_chars 500: ~440 docs/s; max_chars 10,000: ~95 docs/s.
The first three keep and remove the same pages, also when given only the first 300 chars. Given 100 chars they
disagree on 17: the default is unsure (< 0.65) of 12 English pages that low accuracy keeps, and low accuracy
calls 2 English ones Tagalog and German.
"""
from __future__ import annotations

from functools import lru_cache

from lingua import IsoCode639_1, Language, LanguageDetector, LanguageDetectorBuilder
from pydantic import Field, field_validator

from components.clean.doc import Doc, Filter
from components.params import StrictModel


class LanguageIdParams(StrictModel):
    enabled: bool = True
    languages: list[str] = Field(["en"], min_length=1, description="ISO 639-1 codes of the languages to keep")
    min_confidence: float = Field(0.65, ge=0, le=1, description="as datatrove's LanguageFilter (0.65)")
    candidates: list[str] | None = Field(
        None,
        description="languages lingua chooses among (None: all 75). Fewer is faster, but text in a language left out "
        "is then given to the nearest candidate, with a confidence relative to the candidates only",
    )
    low_accuracy: bool = Field(
        False, description="lingua's trigram models only: 10x less memory, 5x faster to load, worse under ~120 chars"
    )
    max_chars: int = Field(2000, gt=0, description="classify only the start of the text: time grows with length")

    @field_validator("languages", "candidates")
    @classmethod
    def _iso_639_1(cls, codes: list[str] | None) -> list[str] | None:
        for code in codes or []:
            try:
                IsoCode639_1.from_str(code)
            except ValueError:
                raise ValueError(f"{code!r} is not an ISO 639-1 code lingua knows") from None
        return codes


class LanguageId(Filter):
    """Sets doc.meta["language"] (ISO 639-1, lower case; "unknown" when lingua cannot tell) and
    doc.meta["language_score"] (lingua's confidence in it, 0..1).

    Rules: "low_confidence" (the best language scores under min_confidence; checked first, as in datatrove),
    "not_in_languages" (a confident language that is not one of `languages`).
    """

    name = "language"

    def __init__(self, params: LanguageIdParams = LanguageIdParams()):
        self.params = params
        self.keep = {code.lower() for code in params.languages}
        candidates = tuple(sorted({c.lower() for c in params.candidates} | self.keep)) if params.candidates else None
        self.detector = detector(candidates, params.low_accuracy)  # built here, so a bad code fails at start-up

    def __call__(self, doc: Doc) -> str | None:
        if not self.params.enabled:
            return None
        language, score = self.identify(doc.text[: self.params.max_chars])
        doc.meta["language"] = language
        doc.meta["language_score"] = score
        if score < self.params.min_confidence:
            return "low_confidence"
        return None if language in self.keep else "not_in_languages"

    def identify(self, text: str) -> tuple[str, float]:
        # The first value is the most likely language; an empty list means no letters lingua knows.
        values = self.detector.compute_language_confidence_values(text)
        if not values:
            return "unknown", 0.0
        best = values[0]
        return best.language.iso_code_639_1.name.lower(), round(best.value, 4)


@lru_cache(maxsize=4)
def detector(candidates: tuple[str, ...] | None, low_accuracy: bool) -> LanguageDetector:
    """One detector per process and settings: building one and loading its models takes seconds."""
    if candidates:
        languages = [Language.from_iso_code_639_1(IsoCode639_1.from_str(code)) for code in candidates]
        builder = LanguageDetectorBuilder.from_languages(*languages)
    else:
        builder = LanguageDetectorBuilder.from_all_languages()
    if low_accuracy:
        builder = builder.with_low_accuracy_mode()
    return builder.build()
