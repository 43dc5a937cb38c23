"""The model: a Llama-style decoder sized by one dial (`depth`), its parameter and FLOP counts, and its
export as a Hugging Face folder.

`build_model(params, vocab_size, bos_id, eos_id, pad_id)` gives a `transformers.LlamaForCausalLM`; the
training stage wraps it for parallelism, this package does not. `describe(params, vocab_size)` tabulates
the sizes a `depth` gives. Importing the package imports only `ModelParams` (components/lazy.py says why).
"""
from components.lazy import lazy_names
from components.model.params import ModelParams

__getattr__ = lazy_names(__name__, {
    "build_model": "config", "llama_config": "config", "model_params": "config", "export_hf": "export",
    "model_card": "export", "reload_difference": "export", "describe": "flops", "flops_per_token": "flops",
    "parameter_count": "flops",
})
__all__ = ["ModelParams", "build_model", "describe", "export_hf", "flops_per_token", "llama_config", "model_card",
           "model_params", "parameter_count", "reload_difference"]
