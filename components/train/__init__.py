"""The pretraining stage's core: token windows, the LR schedule and the DeepSpeed loop with exact resume.

`train(TrainConfig(...))` runs on every rank of a launch (`launch.command(...)`: torchrun on one node, the
deepspeed launcher over a hostfile, or srun under Slurm) of `python -m components.train.run CFG.json`;
`TokenWindows` and `lr_at` are pure functions of the step, which is what makes a resumed run identical to an
uninterrupted one. Importing this package imports neither DeepSpeed nor torch; `train`, `export_checkpoint` and
the data readers do.
"""
from components.lazy import lazy_names
from components.train.params import TrainConfig, TrainParams
from components.train.schedule import decay_start, in_decay, lr_at

__all__ = ["TokenStream", "TokenWindows", "TrainConfig", "TrainParams", "decay_start", "deepspeed_config",
           "export_checkpoint", "in_decay", "lr_at", "split_shards", "train", "val_batches"]

# DeepSpeed takes seconds to import and probes for accelerators, torch (data) a few: only pay for them when training.
__getattr__ = lazy_names(__name__, {"train": "engine", "deepspeed_config": "engine", "export_checkpoint": "export",
                                    **{name: "data" for name in ("TokenStream", "TokenWindows", "split_shards",
                                                                 "val_batches")}})
