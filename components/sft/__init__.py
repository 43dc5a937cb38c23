"""Supervised fine-tuning's science outside the training loop (the loss and packing are the `sft` objective in
components/train/objectives): what a chat model does when asked, measured the same way for any model folder.
"""
from components.sft.behaviour import Generation, generate_replies, held_out_prompts, stop_rates

__all__ = ["Generation", "generate_replies", "held_out_prompts", "stop_rates"]
