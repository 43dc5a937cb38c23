"""Parameters of the clean stage (the `clean` section of params.yaml): one block per step, in run order."""
from __future__ import annotations

from components.clean.dedup import DedupParams
from components.clean.doc import Filter
from components.clean.executor import ExecutorParams
from components.clean.extract import Extract, ExtractParams
from components.clean.heuristics import (C4BadWords, C4BadWordsParams, C4Quality, C4QualityParams, FineWebQuality,
                                         FineWebQualityParams, GopherQuality, GopherQualityParams, GopherRepetition,
                                         GopherRepetitionParams)
from components.clean.langid import LanguageId, LanguageIdParams
from components.clean.pii import PiiParams, PiiScrubber
from components.clean.quality import QualityParams
from components.clean.urlfilter import UrlFilter, UrlFilterParams
from components.params import StrictModel


class CleanParams(StrictModel):
    url: UrlFilterParams = UrlFilterParams()
    extract: ExtractParams = ExtractParams()
    language: LanguageIdParams = LanguageIdParams()
    gopher_repetition: GopherRepetitionParams = GopherRepetitionParams()
    gopher_quality: GopherQualityParams = GopherQualityParams()
    c4: C4QualityParams = C4QualityParams()
    c4_badwords: C4BadWordsParams = C4BadWordsParams()
    fineweb: FineWebQualityParams = FineWebQualityParams()
    pii: PiiParams = PiiParams()
    dedup: DedupParams = DedupParams()
    quality: QualityParams = QualityParams()
    executor: ExecutorParams = ExecutorParams()


def build_filters(params: CleanParams) -> list[Filter]:
    """The per-document steps in run order (the cheap URL check first; repetition before quality, as FineWeb; bad
    words after C4's line rules and the language step, as in C4);
    a step whose `enabled` is false is left out."""
    steps = [(UrlFilter, params.url), (Extract, params.extract), (LanguageId, params.language),
             (GopherRepetition, params.gopher_repetition), (GopherQuality, params.gopher_quality),
             (C4Quality, params.c4), (C4BadWords, params.c4_badwords), (FineWebQuality, params.fineweb),
             (PiiScrubber, params.pii)]
    return [step(p) for step, p in steps if getattr(p, "enabled", True)]
