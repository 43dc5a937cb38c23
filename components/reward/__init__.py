"""What a reward model learned, measured on held-out preference pairs (training is the `reward` objective in
components/train/objectives)."""
from components.reward.analysis import analyse, plot_analysis, score_pairs, score_replies

__all__ = ["analyse", "plot_analysis", "score_pairs", "score_replies"]
