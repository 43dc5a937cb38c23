"""The pretraining stage's core: token windows, the LR schedule and the DeepSpeed loop with exact resume.

`train(TrainConfig(...))` runs on every rank of a launch (`launch.command(...)`: torchrun on one node, the
deepspeed launcher over a hostfile, or srun under Slurm) of `python -m components.train.run CFG.json`;
`TokenWindows` and `lr_at` are pure functions of the step, which is what makes a resumed run identical to an
uninterrupted one. Importing this package does not import DeepSpeed; `train` and `export_checkpoint` do.
"""
from components.train.data import TokenStream, TokenWindows, split_shards, val_batches
from components.train.params import TrainConfig, TrainParams
from components.train.schedule import decay_start, in_decay, lr_at

__all__ = ["TokenStream", "TokenWindows", "TrainConfig", "TrainParams", "decay_start", "deepspeed_config",
           "export_checkpoint", "in_decay", "lr_at", "split_shards", "train", "val_batches"]


def __getattr__(name: str):
    # DeepSpeed takes seconds to import and probes for accelerators: only pay for it when training.
    if name in ("train", "deepspeed_config"):
        from components.train import engine
        return getattr(engine, name)
    if name == "export_checkpoint":
        from components.train.export import export_checkpoint
        return export_checkpoint
    raise AttributeError(name)
