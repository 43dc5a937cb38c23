"""Loading a model folder that may have come from elsewhere (a `dvc pull` from a shared remote, the hub): weights
only from safetensors, which hold tensors and nothing else. A pickled `pytorch_model.bin` can run code when it is
loaded, so a folder that has only that is refused (transformers raises, naming the missing safetensors file)."""
from __future__ import annotations

import torch


def load_pretrained(auto_class, folder, **kwargs):
    """`auto_class.from_pretrained(folder)` in fp32, from safetensors only."""
    return auto_class.from_pretrained(folder, dtype=torch.float32, use_safetensors=True, **kwargs)
