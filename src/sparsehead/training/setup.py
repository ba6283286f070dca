"""Setup: everything a pretraining run builds once, before its first step, returned as one Run.

The order matters and is checked: the run folder and the config against its last checkpoint first,
then the data (its size against the batch), then the model, optimiser and hooks, then the resumed
state, and only then anything written to the run folder."""

from __future__ import annotations

import random
import sys
import warnings
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler
from tqdm import tqdm

from sparsehead import config
from sparsehead.config import Config
from sparsehead.core import distributed as dist
from sparsehead.core.errors import SparseheadError
from sparsehead.core.precision import grad_scaler, resolve_precision
from sparsehead.core.step_hook import StepHook
from sparsehead.core.sync_batchnorm import convert_sync_batchnorm
from sparsehead.data import datasets, image_check
from sparsehead.data.feed import open_feed
from sparsehead.data.views import ViewGenerator, views_dtype
from sparsehead.models.backbones import use_channels_last
from sparsehead.runs import checkpoint, provenance
from sparsehead.runs.folder import RunDir
from sparsehead.runs.lock import RunLock
from sparsehead.runs.metrics_log import MetricLogger, check_loggers
from sparsehead.runs.model import build_model, default_run_name, resolve_device
from sparsehead.sparsity import SparseHeadRegularizer
from sparsehead.training import memory_check, resume
from sparsehead.training.collapse import CollapseMonitor
from sparsehead.training.faults import NonFiniteGuard
from sparsehead.training.graphs import GraphedModel, compile_model
from sparsehead.training.hooks import REGISTERED, MethodAfterStep
from sparsehead.training.monitors import OnlineMonitor, knn_summary
from sparsehead.training.optim import build_optimizer, describe_lr, warmup_cosine
from sparsehead.training.preempt import StopOnSignal
from sparsehead.training.run import Run
from sparsehead.training.state import TrainState


class TrainingError(SparseheadError, RuntimeError):
    """A run that cannot go on (bad data size, non-finite loss), with the step and the fix."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def setup(cfg: Config, run_dir: Optional[str | Path] = None, force: bool = False) -> Run:
    """Build the run `cfg` describes in `run_dir`, resumed where that folder holds a checkpoint made with
    the same config (force: even when other keys than resume.RESUME_MAY_DIFFER differ)."""
    device = resolve_device(cfg.train.device)
    check_loggers(cfg.train.loggers)  # a missing tracker's extra, before any work
    dist.setup(device)
    torch.backends.cudnn.benchmark |= device.type == "cuda" and not torch.backends.cudnn.deterministic  # fixed shapes
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    seed_everything(cfg.train.seed)
    run_dir = Path(run_dir) if run_dir else Path(cfg.train.out_dir) / (cfg.train.run_name or default_run_name(cfg))
    stop_on_signal = StopOnSignal(cfg.train, run_dir)
    stop_on_signal.open()  # from here to teardown a stop signal ends the run with its state saved
    closers = [stop_on_signal.close]
    try:
        if dist.is_main():
            checkpoint.check_writable(run_dir)
            # One writer per run folder, taken before resume_point cleans the temporary files of writes.
            closers.append(RunLock(run_dir).acquire().release)
        return build_run(cfg, run_dir, device, force, stop_on_signal, closers)
    except BaseException:
        for close in reversed(closers):
            close()
        raise


def build_run(
    cfg: Config, run_dir: Path, device: torch.device, force: bool, stop_on_signal: StopOnSignal, closers: list
) -> Run:
    """Everything else, in this order: the checkpoint to resume, the data, the views and feed, the model,
    optimiser, schedule and hooks, the restored state, the run folder written."""
    resumed = resume.resume_point(run_dir, cfg, force)  # the folder's last good checkpoint, checked against cfg
    memory_check.check_views_fit(cfg, device)  # before any decoding
    data = training_data(cfg)
    precision = resolve_precision(cfg.train.precision, device)
    channels_last = cfg.train.channels_last and use_channels_last(cfg.model, cfg.data.image_size, device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    mean, std = data.channel_stats()
    views = ViewGenerator(cfg.augment, cfg.data.image_size, mean, std, memory_format, views_dtype(precision, device))
    feed, steps_per_epoch = training_feed(cfg, data, views, device)
    total_steps = steps_per_epoch * cfg.train.epochs

    method, model = build_training_model(cfg, device, memory_format)
    if isinstance(model, GraphedModel):
        closers.append(model.close)
    scaler = grad_scaler(precision, device)
    optimizer = build_optimizer(cfg.optim, method, cfg.train.batch_size)
    if dist.is_main():  # the logged lr follows the schedule from this peak
        print(describe_lr(cfg.optim, cfg.train.batch_size), file=sys.stderr)
    scheduler = warmup_cosine(
        optimizer, round(cfg.optim.warmup_epochs * steps_per_epoch), total_steps, cfg.optim.min_lr_ratio
    )
    hooks = step_hooks(cfg, run_dir, method, len(data.classes), views, device, total_steps, stop_on_signal)
    augment_rng = torch.Generator(device=device)
    augment_rng.manual_seed(cfg.train.seed * 1_000_003 + dist.rank())  # per-rank views, reproducible
    state = TrainState(method, optimizer, scheduler, scaler, hooks, augment_rng)
    # Seeded again now the run is built: an import on the way may draw from Python's random when first
    # made (scikit-learn's progress bars), so the state would depend on what the process imported before.
    random.seed(cfg.train.seed)
    if resumed is not None:
        restore(state, resumed, run_dir, len(data), steps_per_epoch, force)
    logger = open_run_folder(cfg, run_dir, method, device, state.step)
    last_step = min(total_steps, cfg.train.max_steps or total_steps)
    bar = tqdm(
        total=last_step,
        initial=state.step,
        desc="pretrain",
        unit="step",
        dynamic_ncols=True,
        disable=not (cfg.train.progress and dist.is_main()),
    )
    return Run(
        cfg, run_dir, device, precision, data, views, feed, method, model, optimizer, scheduler, scaler, hooks,
        state, logger, bar, steps_per_epoch, last_step, (mean, std), closers,
    )  # fmt: skip


def training_data(cfg: Config):
    """The training set (decoded once into uint8, or streamed: data.storage), checked against the batch;
    first every split's index and images (a missing test split, a class train lacks, an unreadable image
    under data.bad_images=fail), so that no such problem surfaces after training has begun."""
    image_check.check_splits(cfg.data)
    data = datasets.load(cfg.data, "pretrain")
    batch, world = cfg.train.batch_size, dist.world_size()
    if batch % world:
        raise TrainingError(f"train.batch_size={batch} must be divisible by the {world} processes")
    if len(data) < batch:
        raise TrainingError(
            f"the data set has {len(data)} images, fewer than train.batch_size={batch}; "
            "lower train.batch_size or use more data"
        )
    if problem := config.data_size_problem(cfg, len(data)):
        raise TrainingError(problem)
    if data.skipped:
        warnings.warn(f"training without {data.skipped} unreadable image(s) (data.bad_images=skip)")
    return data


def training_feed(cfg: Config, data, views: ViewGenerator, device: torch.device):
    """The feed of this process's share of each batch (DistributedSampler: one seeded order per epoch,
    split over the processes), and the steps an epoch has."""
    local_batch = cfg.train.batch_size // dist.world_size()
    sampler = DistributedSampler(
        range(len(data)),
        num_replicas=dist.world_size(),
        rank=dist.rank(),
        shuffle=True,
        seed=cfg.train.seed,
        drop_last=True,
    )
    feed = open_feed(data, sampler, local_batch, views.plan, cfg.train.seed, cfg.data.workers, device)
    return feed, len(sampler) // local_batch


def step_hooks(
    cfg: Config,
    run_dir: Path,
    method: torch.nn.Module,
    num_classes: int,
    views: ViewGenerator,
    device: torch.device,
    total_steps: int,
    stop_on_signal: StopOnSignal,
) -> list[StepHook]:
    """Every step hook of the run, in the order they are called: the SparseHead regulariser, the
    non-finite guard, the monitors, the collapse alarm, the method's own after-step work, the stop
    signals, then the hooks registered from outside (training.hooks.register_hook)."""
    return [
        SparseHeadRegularizer(cfg.sparsity, method.sparse_head(), total_steps),
        NonFiniteGuard(cfg.train, method, run_dir),
        OnlineMonitor(
            cfg.eval,
            method.backbone.feature_dim,
            num_classes,
            device,
            knn=lambda: knn_summary(method, cfg, views, device),  # every rank does its share
        ),
        CollapseMonitor(cfg.train, run_dir),
        MethodAfterStep(method, total_steps),
        stop_on_signal,
        *(factory(cfg, method) for factory in REGISTERED),
    ]


def build_training_model(cfg: Config, device: torch.device, memory_format: torch.memory_format):
    """The method, and the module the step calls: wrapped for DDP, SyncBatchNorm, compiled and replayed
    as CUDA graphs as asked (training/graphs.py)."""
    method = build_model(cfg).to(device, memory_format=memory_format)
    if dist.world_size() > 1 and cfg.model.sync_batchnorm:
        method = convert_sync_batchnorm(method, device)
    model = method
    if dist.world_size() > 1:
        model = DistributedDataParallel(method, device_ids=[device.index] if device.type == "cuda" else None)
    return method, compile_model(model, cfg.train, device)


def restore(state: TrainState, resumed: tuple[Path, dict], run_dir: Path, size: int, steps_per_epoch: int, force: bool):
    """Resume exactly: weights, optimiser, schedule, every random state, the data position."""
    path, saved = resumed
    resume.check_data_position(saved, size, steps_per_epoch, force)
    state.load_state_dict(saved)
    if dist.is_main():
        print(f"resuming {run_dir} from {path.name} (step {state.step})", file=sys.stderr)


def open_run_folder(cfg: Config, run_dir: Path, method: torch.nn.Module, device: torch.device, step: int):
    """The config and environment written to the run folder (with room for the checkpoints checked first),
    and the metrics logger, appending from `step`."""
    environment = None
    if dist.is_main():
        checkpoint.check_free_space(run_dir, method, cfg.train.keep_checkpoints)
        RunDir(run_dir).write_config(cfg)
        environment = provenance.environment(device)
        RunDir(run_dir).write_environment(environment)
    return MetricLogger(
        run_dir,
        enabled=dist.is_main(),
        loggers=cfg.train.loggers,
        start_step=step,
        run_info={"config": config.to_dict(cfg), "environment": environment} if dist.is_main() else None,
        wandb_project=cfg.train.wandb_project,
    )
