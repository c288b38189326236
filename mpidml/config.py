"""Typed training configuration: defaults < TOML file < command-line flags, validated.

The TOML file uses the same names as the command-line flags (with ``_``
instead of ``-``), either flat or grouped in tables, for example::

    model = "logistic"
    l2 = 1e-4

    [optim]
    optimizer = "sgd"
    lr = 0.5
    momentum = 0.9
    batch_size = 4096
    epochs = 5

Table names are only for readability: every key must be a known option.
The resolved configuration is written back as ``RUN/config.toml``.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
from dataclasses import dataclass, fields

from .errors import ConfigError

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib

MODELS = ("linear", "logistic", "softmax", "mlp", "mf")
OPTIMIZERS = ("sgd", "adam", "gd", "lbfgs", "als")
LBFGS_SCALINGS = ("features", "none")
STRATEGIES = ("allreduce", "ps")
PS_MODES = ("sync", "async", "ssp")
DRIVERS = ("auto", "mpio", "independent")
SCHEDULES = ("constant", "inverse_sqrt", "step", "cosine")
SHUFFLES = ("global", "none")
COMM_DTYPES = ("float64", "float32")
STEP_LOOPS = ("auto", "python")
REDUCTIONS = ("auto", "mpi")
IMPUTE = ("none", "mean")


@dataclass
class TrainConfig:
    """Every option of ``mpidml train``; see ``mpidml train --help`` for meanings."""

    # data
    data: str = ""
    x_name: str = "X"
    y_name: str = "y"
    driver: str = "auto"
    # model and objective: f = (1/N) sum_i loss_i + (l2/2) ||W||^2, intercepts not penalised
    model: str = "logistic"
    classes: int = 0  # softmax: number of classes; 0 = max label + 1 over the whole dataset
    hidden: str = ""  # mlp: hidden layer sizes, "64" or "128,64" ("" = 64)
    class_weight: str = ""  # classifiers: "" (none) | "balanced" | "0:1,1:5"
    shard: str = "contiguous"  # which rows each rank holds: contiguous | stratified | shuffled
    l2: float = 1e-4
    # features: global statistics over all rows, stored in model.h5 (mpidml/preprocess.py)
    impute: str = "none"  # none (NaN in X is an error) | mean (NaN -> column mean)
    standardize: bool = False  # (x - column mean) / column std; constant columns are only centred
    # mf (ratings user/item/rating; mpidml.models.mf): rank k of the factors; held-out ratings file
    rank: int = 0
    holdout: str = ""
    # optimizer
    strategy: str = "allreduce"
    comm_dtype: str = "float64"  # allreduce: dtype of the reduced gradient on the wire (parameters stay float64)
    step_loop: str = "auto"  # allreduce sgd/adam: auto (compiled where the model allows) | python (same result)
    reduction: str = "auto"  # allreduce sgd/adam steps: auto (shared memory on a node) | mpi (MPI_Allreduce)
    optimizer: str = "lbfgs"
    lr: float = 0.1
    lr_schedule: str = "constant"
    momentum: float = 0.0
    nesterov: bool = False
    beta1: float = 0.9
    beta2: float = 0.999
    batch_size: int = 256  # global mini-batch (all ranks together)
    epochs: int = 10
    max_iter: int = 1000  # L-BFGS iterations / gradient-descent steps
    tol: float = 1e-8  # L-BFGS and GD: stop when max |gradient| <= tol
    ftol: float = 0.0  # L-BFGS: also stop when the relative reduction of f is <= ftol (0: off)
    memory: int = 10  # L-BFGS history
    lbfgs_scaling: str = "features"  # L-BFGS initial Hessian: features (diagonal from column scales) | none (scalar)
    shuffle: str = "global"
    seed: int = 0
    # parameter server (--strategy ps)
    ps_mode: str = "sync"  # sync | async | ssp
    staleness: int = 0  # ssp: max clocks a worker may run ahead of the slowest
    servers: int = 1  # ranks 0..servers-1 hold slices of the parameters; must be < number of ranks
    # run
    out: str = ""
    threads: int = 1
    log_every: int = 0  # steps between metric lines; 0 = about 10 per epoch (SGD) / every iteration (L-BFGS)
    overwrite: bool = False
    verbose: bool = False
    progress: str = "auto"  # auto (bar on a terminal, log lines otherwise) | bar | log | none
    max_memory: int = 0  # bytes of X a rank may hold; a larger shard is streamed from the file (0 = no limit)
    checkpoint_every: int = 0  # steps (L-BFGS/GD: iterations) between checkpoints; 0 = only at the end
    timeout: float = 0.0  # abort the job when no step completes in this many seconds; 0 = off
    resume: str = ""  # run directory to continue from its newest checkpoint

    # options that do not change the trained model (excluded from the config hash; "reduction"
    # changes only the order of a sum, i.e. rounding, as the number of ranks does)
    RUN_ONLY = ("out", "threads", "log_every", "overwrite", "verbose", "progress", "driver",
                "checkpoint_every", "timeout", "resume", "max_memory", "step_loop", "reduction")

    def validate(self) -> "TrainConfig":
        def choice(name, allowed):
            value = getattr(self, name)
            if value not in allowed:
                raise ConfigError(f"unknown {name} {value!r}{_suggest(str(value), allowed)}; choose from {', '.join(allowed)}")

        choice("model", MODELS)
        choice("optimizer", OPTIMIZERS)
        choice("strategy", STRATEGIES)
        choice("driver", DRIVERS)
        choice("lr_schedule", SCHEDULES)
        choice("shuffle", SHUFFLES)
        choice("ps_mode", PS_MODES)
        choice("progress", ("auto", "bar", "log", "none"))
        choice("comm_dtype", COMM_DTYPES)
        choice("step_loop", STEP_LOOPS)
        choice("reduction", REDUCTIONS)
        choice("impute", IMPUTE)
        choice("lbfgs_scaling", LBFGS_SCALINGS)
        if self.model == "mf" or self.optimizer == "als" or self.rank or self.holdout:
            from .recommend import check_mf_config

            check_mf_config(self)
        if self.comm_dtype != "float64" and self.strategy != "allreduce":
            raise ConfigError(f"--comm-dtype {self.comm_dtype} applies to --strategy allreduce only "
                              f"(got --strategy {self.strategy})")
        positive = {"lr": self.lr, "batch_size": self.batch_size, "epochs": self.epochs,
                    "max_iter": self.max_iter, "memory": self.memory, "threads": self.threads}
        for name, value in positive.items():
            if not (value > 0) or (isinstance(value, float) and not math.isfinite(value)):
                raise ConfigError(f"--{name.replace('_', '-')} must be > 0, got {value}")
        if not (self.l2 >= 0 and math.isfinite(self.l2)):
            raise ConfigError(f"--l2 must be >= 0, got {self.l2}")
        if not (self.tol >= 0):
            raise ConfigError(f"--tol must be >= 0, got {self.tol}")
        if not (0 <= self.ftol < 1):
            raise ConfigError(f"--ftol must be in [0, 1), got {self.ftol}")
        if not (0 <= self.momentum < 1):
            raise ConfigError(f"--momentum must be in [0, 1), got {self.momentum}")
        if self.nesterov and self.momentum == 0:
            raise ConfigError("--nesterov needs --momentum > 0")
        if self.momentum and self.optimizer not in ("sgd", "gd"):
            raise ConfigError(f"--momentum applies to --optimizer sgd and gd, not {self.optimizer}"
                              + (" (Adam's momentum is --beta1)" if self.optimizer == "adam" else ""))
        if self.staleness < 0:
            raise ConfigError(f"--staleness must be >= 0, got {self.staleness}")
        if self.servers < 1:
            raise ConfigError(f"--servers must be >= 1, got {self.servers}")
        if self.strategy == "ps":
            if self.optimizer not in ("sgd", "adam"):
                raise ConfigError(f"--strategy ps trains with the mini-batch optimizers sgd and adam, not "
                                  f"{self.optimizer}; use --optimizer sgd|adam or --strategy allreduce")
            if self.staleness and self.ps_mode != "ssp":
                raise ConfigError(f"--staleness applies to --ps-mode ssp only (got --ps-mode {self.ps_mode})")
        elif self.ps_mode != "sync" or self.staleness or self.servers != 1:
            raise ConfigError("--ps-mode, --staleness and --servers need --strategy ps")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ConfigError(f"--beta1 and --beta2 must be in [0, 1), got {self.beta1}, {self.beta2}")
        choice("shard", ("contiguous", "stratified", "shuffled"))
        if self.class_weight:
            from .imbalance import parse_class_weight

            parse_class_weight(self.class_weight)
            if self.model == "linear":
                raise ConfigError("--class-weight applies to classifiers (logistic, softmax, mlp), not linear")
        if self.shard == "stratified" and self.model == "linear":
            raise ConfigError("--shard stratified needs class labels; use shuffled or contiguous for --model linear")
        if self.shard != "contiguous" and self.strategy != "allreduce":
            raise ConfigError(f"--shard {self.shard} is supported by --strategy allreduce only")
        if self.hidden and self.model != "mlp":
            raise ConfigError(f"--hidden applies to --model mlp only (got --model {self.model})")
        if self.model == "mlp":
            from .models.mlp import parse_hidden

            parse_hidden(self.hidden or "64")
        if self.classes < 0 or self.classes == 1:
            raise ConfigError(f"--classes must be >= 2 (or 0 to infer from the labels), got {self.classes}")
        if self.log_every < 0:
            raise ConfigError(f"--log-every must be >= 0, got {self.log_every}")
        if self.max_memory < 0:
            raise ConfigError(f"--max-memory must be >= 0 bytes, got {self.max_memory}")
        if self.checkpoint_every < 0:
            raise ConfigError(f"--checkpoint-every must be >= 0, got {self.checkpoint_every}")
        if not (self.timeout >= 0 and math.isfinite(self.timeout)):
            raise ConfigError(f"--timeout must be >= 0 seconds, got {self.timeout}")
        if not self.data:
            raise ConfigError("no training data given: mpidml train DATA.h5 --out RUN")
        if not self.out:
            raise ConfigError("no run directory given: use --out RUN")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def training_options(self) -> dict:
        """The options that change the trained model (the data file is checked by fingerprint)."""
        return {k: v for k, v in self.to_dict().items() if k not in self.RUN_ONLY and k != "data"}

    def training_hash(self) -> str:
        """Hash of :meth:`training_options` (checkpoints must match it to resume)."""
        return hashlib.sha256(json.dumps(self.training_options(), sort_keys=True).encode()).hexdigest()[:16]

    def to_toml(self) -> str:
        lines = ["# mpidml train: resolved configuration (defaults < config file < command line)"]
        for f in fields(self):
            lines.append(f"{f.name} = {_toml_value(getattr(self, f.name))}")
        return "\n".join(lines) + "\n"


OPTION_NAMES = tuple(f.name for f in fields(TrainConfig))
_TYPES = {f.name: type(f.default) for f in fields(TrainConfig)}


def _suggest(word: str, options) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return json.dumps(str(v))  # a JSON string is a valid TOML basic string


def _coerce(name: str, value):
    kind = _TYPES[name]
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config key {name!r} must be true or false, got {value!r}")
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind is str and isinstance(value, str):
        return value
    raise ConfigError(f"config key {name!r} must be a {kind.__name__}, got {value!r}")


def read_toml(path: str) -> dict:
    """Read a config file into a flat {option: value} dict (tables are flattened)."""
    try:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path}: TOML syntax error: {e}") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    flat: dict = {}

    def walk(d, where):
        for key, value in d.items():
            if isinstance(value, dict):
                walk(value, f"{where}{key}.")
                continue
            name = key.replace("-", "_")
            if name not in OPTION_NAMES:
                raise ConfigError(f"config file {path}: unknown key '{where}{key}'{_suggest(name, OPTION_NAMES)}")
            flat[name] = _coerce(name, value)

    walk(raw, "")
    return flat


def build_config(file_options: dict, cli_options: dict) -> TrainConfig:
    """Defaults, then the config file, then command-line flags that were given (not None)."""
    cfg = TrainConfig()
    for source in (file_options, {k: v for k, v in cli_options.items() if v is not None}):
        for name, value in source.items():
            setattr(cfg, name, _coerce(name, value) if name in _TYPES else value)
    return cfg.validate()


def field_help() -> dict:
    return {f.name: f.default for f in fields(TrainConfig)}


__all__ = ["TrainConfig", "build_config", "read_toml", "OPTION_NAMES"]
