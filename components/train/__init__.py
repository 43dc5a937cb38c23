"""The pretraining stage's core: token windows, the LR schedule and the DeepSpeed loop with exact resume.

`train(TrainConfig(...))` runs on every rank of a `torchrun` launch (`python -m components.train.run CFG.json`);
`TokenWindows` and `lr_at` are pure functions of the step, which is what makes a resumed run identical to an
uninterrupted one. Importing this package does not import DeepSpeed; `train` does.
"""
from components.train.data import TokenStream, TokenWindows, split_shards, val_batches
from components.train.schedule import decay_start, in_decay, lr_at

__all__ = ["TokenStream", "TokenWindows", "TrainConfig", "decay_start", "deepspeed_config", "in_decay", "lr_at",
           "split_shards", "train", "val_batches"]


def __getattr__(name: str):
    # DeepSpeed takes seconds to import and probes for accelerators: only pay for it when training.
    if name in ("TrainConfig", "train", "deepspeed_config"):
        from components.train import engine
        return getattr(engine, name)
    raise AttributeError(name)
