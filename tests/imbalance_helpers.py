"""Train in-process with --shard / --class-weight applied exactly as mpidml.train does."""

import numpy as np

from mpidml.config import TrainConfig
from mpidml.imbalance import prepare_rows
from mpidml.metrics import Reporter
from mpidml.models import make_model
from mpidml.parallel import AllreduceTrainer

from helpers import shard_of


def make_imbalanced(n=1201, d=5, pos_frac=0.15, seed=0, k=2):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    if k == 2:
        y = (rng.random(n) < pos_frac).astype(np.float64)
        X[y == 1] += 0.8
    else:
        y = rng.choice(k, size=n, p=np.linspace(1, 6, k) / np.linspace(1, 6, k).sum()).astype(np.int64)
        X += 0.5 * y[:, None] * rng.standard_normal(d)
    return X, y


def train_rows(ctx, X, y, shard="contiguous", class_weight="", **options):
    cfg = TrainConfig(data="<memory>", out="<none>", progress="none", shard=shard, class_weight=class_weight,
                      **options).validate()
    k = int(y.max()) + 1 if cfg.model in ("softmax", "mlp") else 2
    sh = shard_of(X, y, ctx.rank, ctx.size)
    sh, cw, _ = prepare_rows(ctx, sh, k, cfg.shard, cfg.class_weight, cfg.seed)
    model = make_model(cfg.model, X.shape[1], k, cfg.hidden)
    weight_sum = ctx.allreduce_scalar(float(sh.sw.sum()) if sh.sw.size else float(sh.n_local))
    trainer = AllreduceTrainer(ctx, model, sh, cfg, Reporter(None, enabled=False), weight_sum)
    params = model.init_params(cfg.seed)
    trainer.fit(params)
    return params, trainer, sh, cw
