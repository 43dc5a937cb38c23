"""Supervised fine-tuning's science outside the training loop (the loss and packing are the `sft` objective in
components/train/objectives): what a chat model does when asked, measured the same way for any model folder.
"""
from components.lazy import lazy_names

# behaviour imports torch: loaded on first use
__getattr__ = lazy_names(__name__, {name: "behaviour" for name in
                                    ("Generation", "generate_replies", "held_out_prompts", "stop_rates")})

__all__ = ["Generation", "generate_replies", "held_out_prompts", "stop_rates"]
