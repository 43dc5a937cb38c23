"""Preference data for the reward model and DPO: human pairs in the formats people have, and pairs the SFT policy
samples and an LLM judge labels (AlpacaFarm) → deduplicated, decontaminated, chat-templated and tokenized pairs,
each side masked to its last reply, split by prompt.

- readers.py: HH-RLHF transcripts, the DPO prompt/chosen/rejected format (and LLaMA-Factory's), OpenAssistant
  ranked siblings → (prompt turns, chosen, rejected);
- pairs.py: one `Pair` shape, its checks and stable ids; sources.py: a source's files → pairs;
- requests.py: chat completions cached on disk by request digest; simulate.py: the policy, the judge and the
  judge's agreement with human labels;
- build.py: the steps in order (the SFT data stage's, components/sft_data, on pairs); report.py: the data card.
"""
from components.lazy import lazy_names
from components.preferences.pairs import ORIGINS, Pair, make_pair, pair_id, prompt_id
from components.preferences.params import Endpoint, PreferenceSource, PreferencesParams, SimulationParams
from components.preferences.sources import PreferenceDataError, read_preferences

# the rest import torch or more: loaded on first use
__getattr__ = lazy_names(__name__, {
    "CachedChat": "requests", "Completion": "requests", "SCHEMA": "build", "build_preferences": "build",
    "judge": "simulate", "parse_verdict": "simulate",  # simulate() itself: from components.preferences.simulate
})

__all__ = ["ORIGINS", "SCHEMA", "CachedChat", "Completion", "Endpoint", "Pair", "PreferenceDataError",
           "PreferenceSource", "PreferencesParams", "SimulationParams", "build_preferences", "judge", "make_pair",
           "pair_id", "parse_verdict", "prompt_id", "read_preferences"]
