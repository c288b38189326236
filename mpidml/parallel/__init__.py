"""Training strategies. Only this package (and mpidml.comm) sends messages."""

from .allreduce import AllreduceTrainer, epoch_permutation
from .parameter_server import ParameterServerTrainer

STRATEGIES = {"allreduce": AllreduceTrainer, "ps": ParameterServerTrainer}

__all__ = ["AllreduceTrainer", "ParameterServerTrainer", "STRATEGIES", "epoch_permutation"]
