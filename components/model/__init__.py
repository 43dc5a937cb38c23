"""The model: a Llama-style decoder sized by one dial (`depth`), its parameter and FLOP counts, and its
export as a Hugging Face folder.

`build_model(params, vocab_size, bos_id, eos_id, pad_id)` gives a `transformers.LlamaForCausalLM`; the
training stage wraps it for parallelism, this package does not. `describe(params, vocab_size)` tabulates
the sizes a `depth` gives.
"""
from components.model.config import ModelParams, build_model, llama_config, model_params
from components.model.export import export_hf, model_card, reload_difference
from components.model.flops import describe, flops_per_token, parameter_count

__all__ = ["ModelParams", "build_model", "describe", "export_hf", "flops_per_token", "llama_config",
           "model_card", "model_params", "parameter_count", "reload_difference"]
