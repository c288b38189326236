"""Training strategies. Only this package (and mpidml.comm) sends messages."""

from .allreduce import AllreduceTrainer, epoch_permutation

STRATEGIES = {"allreduce": AllreduceTrainer}

__all__ = ["AllreduceTrainer", "STRATEGIES", "epoch_permutation"]
