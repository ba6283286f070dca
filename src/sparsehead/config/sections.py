"""The sections of a run's config whose code sits above this package (method, optim, train, eval),
and Config, which gathers every section. The others are declared beside the code they configure:
data (data/datasets.py), augment (data/augment.py), model (models/backbones.py), head
(models/heads.py), sparsity (sparsity.py). The `method` section is method.name plus the chosen
method's own parameters, declared by the method itself (its Params class, methods/base.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Optional

from sparsehead.core.errors import ConfigError
from sparsehead.core.options import opt
from sparsehead.data.augment import AugmentConfig
from sparsehead.data.settings import DataConfig
from sparsehead.methods import METHODS
from sparsehead.models.backbones import ModelConfig
from sparsehead.models.heads import HeadConfig
from sparsehead.sparsity import SparsityConfig


@dataclass
class MethodConfig:
    """method.name and the chosen method's own parameters (method.<key>: its Params instance).

    cfg.method.temperature reads params.temperature; a key the method does not have is an
    AttributeError naming the method."""

    name: str = "simclr"
    params: Any = None

    def __post_init__(self):
        if self.params is None:
            self.params = METHODS.lookup(self.name).Params()

    def __getattr__(self, key):
        params = self.__dict__.get("params")
        if params is None or key.startswith("__"):
            raise AttributeError(key)
        try:
            return getattr(params, key)
        except AttributeError:
            raise AttributeError(f"method {self.name} has no parameter {key!r}") from None


@dataclass
class OptimConfig:
    name: Literal["adam", "adamw", "sgd", "lars"] = opt("adam", "optimiser (paper: adam)")
    lr: float = opt(
        3e-3,
        "peak learning rate (paper: 3e-3 on CIFAR); with optim.lr_scaling=linear the base lr, scaled by "
        "train.batch_size / 256",
        min=0.0,
        exclusive_min=True,
    )
    lr_scaling: Literal["none", "linear"] = opt(
        "none",
        "none: optim.lr is the peak lr; linear: peak lr = optim.lr x train.batch_size / 256, the papers' "
        "base lr rule (SimCLR, BYOL, Barlow Twins, MoCo v3); the peak lr is printed at the start",
    )
    weight_decay: float = opt(1e-6, "weight decay (paper: 1e-6)", min=0.0)
    weight_decay_filter: Literal["auto", "enabled", "disabled"] = opt(
        "auto",
        "enabled: no weight decay on norm layers, biases and a ViT's position embedding and class "
        "token (DINO, timm); auto: enabled for optim.name=adamw with a ViT backbone, else disabled; "
        "LARS has its own rule (no weight decay on 1-d parameters) and refuses enabled",
    )
    momentum: float = opt(0.9, "SGD / LARS momentum", min=0.0, max=1.0)
    warmup_epochs: float = opt(0.0, "linear warm-up length in epochs before the cosine decay", min=0.0)
    min_lr_ratio: float = opt(0.0, "final learning rate as a fraction of the peak", min=0.0, max=1.0)

    def check(self) -> None:
        if self.name == "lars" and self.weight_decay_filter == "enabled":
            raise ConfigError(
                "optim.weight_decay_filter: enabled is not for optim.name=lars, which keeps its own rule (no "
                "weight decay or trust ratio on 1-d parameters: norm layers, biases); set "
                "optim.weight_decay_filter=auto, or use optim.name=adamw"
            )


@dataclass
class TrainConfig:
    epochs: int = opt(100, "pretraining epochs", min=1)
    max_steps: Optional[int] = opt(
        None, "stop after this many optimiser steps (schedules still span all epochs); for smoke tests", min=1
    )
    batch_size: int = opt(256, "images per step across all processes (each gives two views)", min=2)
    seed: int = opt(0, "random seed of weights, data order and augmentation")
    device: str = opt("auto", "auto (cuda if available, else cpu), cpu, cuda or cuda:N")
    out_dir: str = opt("runs", "parent folder of run folders")
    run_name: Optional[str] = opt(None, "run folder name (default: method-head-lam-seed-time)")
    checkpoint_every: int = opt(1000, "save a checkpoint every N steps (0: only at the end)", min=0)
    keep_checkpoints: int = opt(3, "how many of the newest checkpoints a run folder keeps", min=1)
    nonfinite: Literal["stop", "skip"] = opt(
        "stop",
        "a NaN/Inf loss or gradient: stop the run (last checkpoint kept), or skip the step (no update) and count it",
    )
    nonfinite_max_skips: int = opt(
        10, "with train.nonfinite=skip: stop after this many consecutive skipped steps", min=1
    )
    log_every: int = opt(10, "write metrics every N steps", min=1)
    loggers: list[Literal["jsonl", "tensorboard", "csv", "wandb"]] = opt(
        ["jsonl", "tensorboard"],
        "where metrics go: RUN/metrics.jsonl always, plus any of tensorboard "
        "(RUN/tensorboard), csv (RUN/metrics.csv), wandb (the wandb extra; WANDB_MODE=offline works "
        "without a network); the config and environment are recorded in tensorboard and wandb too",
    )
    wandb_project: str = opt("sparsehead", "wandb project of the run (train.loggers: wandb)")
    progress: bool = opt(True, "show a tqdm progress bar")
    threads: Optional[int] = opt(None, "CPU threads for torch (default: torch's choice)", min=1)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = opt(
        "auto",
        "autocast dtype of the forward pass (losses stay float32); fp16 (CUDA only) adds a "
        "GradScaler; auto: fp32 on the CPU, bf16 on CUDA (fp16 where bf16 is unsupported)",
    )
    channels_last: bool = opt(
        True,
        "channels_last (NHWC) memory format for model and views; measured faster on the CPU too (docs/performance.md)",
    )
    compile: bool = opt(False, "torch.compile the model (slow first steps; needs a C++ compiler on CPU)")
    cuda_graphs: bool = opt(
        False,
        "replay the compiled model's forward and backward (loss included) as CUDA graphs: torch.compile's "
        "mode reduce-overhead, fewer kernel launches where the GPU would wait for the host (small images and "
        "batches, CIFAR scale); needs train.compile=true and a CUDA device; the shapes are static (each "
        "epoch's last partial batch is dropped); without a GPU, under DDP or where torch cannot graph part "
        "of the step the run warns once and goes on compiled without them; results equal the compiled "
        "run's up to float rounding (docs/performance.md)",
    )
    preempt_signals: list[Literal["SIGTERM", "SIGUSR1", "SIGUSR2", "SIGINT", "SIGHUP"]] = opt(
        ["SIGTERM", "SIGUSR1", "SIGINT"],
        "signals that stop the run at the next step boundary with a checkpoint (exit status 75, "
        "resume with --resume); a second SIGINT aborts at once; [] keeps the default handlers "
        "(docs/reliability.md, Pre-emption)",
    )
    on_preempt: Literal["exit", "requeue"] = opt(
        "exit",
        "after the pre-emption checkpoint: exit (status 75), or requeue: `scontrol requeue "
        "$SLURM_JOB_ID` under SLURM, then exit 75",
    )
    collapse_monitor: bool = opt(
        True,
        "watch dimensional collapse while training: effective rank, RankMe and top-eigenvalue share of r "
        "and z, and LiDAR of z over the two views, from the newest train.collapse_window embeddings the "
        "steps computed, logged every train.log_every steps (docs/analysis.md, the online monitor)",
    )
    collapse_window: int = opt(
        1024, "embeddings (of all processes together) the collapse monitor's spectra are estimated from", min=2
    )
    collapse_spectra: Literal["auto", "thread", "step"] = opt(
        "auto",
        "where the collapse monitor's eigensolves run: thread (float64 on a CPU thread while training goes on; "
        "logged, and the alarm acts, at the next logging step, collapse/step naming the window's step), step "
        "(at the logging step, on the training device, which waits for them), auto (thread when training on a "
        "GPU, step on the CPU, where a thread would take the step's own cores)",
    )
    collapse_threshold: float = opt(
        0.1,
        "collapse alarm: the effective rank of r or z below this fraction of its dimension (of the "
        "window's rows when fewer), once the window is full; 0: no alarm",
        min=0.0,
        max=1.0,
    )
    on_collapse: Literal["warn", "stop"] = opt(
        "warn",
        "on the collapse alarm: warn (a warning and a note on the progress bar), or stop the run with a "
        "checkpoint and an error (exit status 2)",
    )

    def check(self) -> None:
        dev = self.device
        if not (dev in ("auto", "cpu", "cuda") or (dev.startswith("cuda:") and dev[5:].isdigit())):
            raise ConfigError(f"train.device: {dev!r} is not allowed; choose auto, cpu, cuda or cuda:N")
        if self.cuda_graphs and not self.compile:
            raise ConfigError(
                "train.cuda_graphs=true needs train.compile=true (the graphs are torch.compile's, mode "
                "reduce-overhead); set train.compile=true, or train.cuda_graphs=false"
            )
        if self.cuda_graphs and dev == "cpu":
            raise ConfigError(
                "train.cuda_graphs=true needs a CUDA device, and train.device=cpu; set train.device=auto "
                "or cuda, or train.cuda_graphs=false"
            )


# The k-NN conventions, used by the training monitors and `sparsehead evaluate --protocol knn`:
# the SparseHead paper's 5-NN majority vote, and InstDisc's 200-NN vote weighted exp(sim / 0.07)
# (MoCo's CIFAR monitor, T = 0.1, is `--temperature 0.1`; docs/evaluation.md, k-NN).
KNN_K, KNN_WEIGHTED_K, KNN_TEMPERATURE = 5, 200, 0.07


@dataclass
class EvalConfig:
    knn_k: int = opt(KNN_K, "k of the end-of-training k-NN (paper: 5, majority vote)", min=1)
    knn_batch_size: int = opt(1024, "test samples per k-NN block (bounds memory)", min=1)
    knn_every: int = opt(0, "k-NN monitor during pretraining every N epochs (0: off)", min=0)
    online_linear: bool = opt(
        False, "train an online linear classifier on r.detach() during pretraining, logged as online_linear_acc"
    )
    online_linear_lr: float = opt(
        1e-3, "Adam learning rate of the online linear classifier", min=0.0, exclusive_min=True
    )


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    sparsity: SparsityConfig = field(default_factory=SparsityConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
