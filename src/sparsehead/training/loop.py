"""The training loop: one loop for every method, head, data set and device, read top to bottom."""

from __future__ import annotations

import gc
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
from sparsehead.core.killpoints import sigkill_point
from sparsehead.core.precision import autocast, grad_scaler, resolve_precision
from sparsehead.core.signals import StopFlag, StopSignals
from sparsehead.core.sync_batchnorm import convert_sync_batchnorm
from sparsehead.data import datasets
from sparsehead.data.feed import open_feed
from sparsehead.data.views import ViewGenerator
from sparsehead.models.backbones import use_channels_last
from sparsehead.runs import checkpoint, provenance
from sparsehead.runs.folder import SCHEMA, RunDir
from sparsehead.runs.metrics_log import MetricLogger, check_loggers
from sparsehead.runs.model import build_model, default_run_name, resolve_device
from sparsehead.sparsity import SparseHeadRegularizer
from sparsehead.training import preempt, resume
from sparsehead.training.collapse import CollapseError, CollapseMonitor
from sparsehead.training.faults import NonFiniteGuard, scaler_step
from sparsehead.training.hooks import MethodAfterStep, gathered, total_penalty
from sparsehead.training.monitors import OnlineMonitor, knn_summary
from sparsehead.training.optim import build_optimizer, describe_lr, warmup_cosine
from sparsehead.training.state import TrainState


class TrainingError(SparseheadError, RuntimeError):
    """A run that cannot go on (bad data size, non-finite loss), with the step and the fix."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def pretrain(cfg: Config, run_dir: Optional[str | Path] = None, force: bool = False) -> dict:
    """Pretrain as `cfg` says; resume when `run_dir` already holds a checkpoint made with the same
    config (force: even when other keys than resume.RESUME_MAY_DIFFER differ). Returns the summary."""
    device = resolve_device(cfg.train.device)
    check_loggers(cfg.train.loggers)  # a missing tracker's extra, before any work
    dist.setup(device)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    seed_everything(cfg.train.seed)
    world, rank = dist.world_size(), dist.rank()

    # --- run folder: writable, and its last good checkpoint checked against cfg, before any work ---
    run_dir = Path(run_dir) if run_dir else Path(cfg.train.out_dir) / (cfg.train.run_name or default_run_name(cfg))
    if dist.is_main():
        checkpoint.check_writable(run_dir)
    resumed = resume.resume_point(run_dir, cfg, force)

    # --- data: decoded once into uint8 or streamed (data.storage), validated before any training work ---
    data = datasets.load(cfg.data, "pretrain")
    batch = cfg.train.batch_size
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
    mean, std = data.channel_stats()
    precision = resolve_precision(cfg.train.precision, device)
    channels_last = cfg.train.channels_last and use_channels_last(cfg.model, cfg.data.image_size, device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    views = ViewGenerator(cfg.augment, cfg.data.image_size, mean, std, memory_format)
    local_batch = batch // world
    sampler = DistributedSampler(
        range(len(data)), num_replicas=world, rank=rank, shuffle=True, seed=cfg.train.seed, drop_last=True
    )
    feed = open_feed(data, sampler, local_batch, cfg, device)
    steps_per_epoch = len(sampler) // local_batch
    total_steps = steps_per_epoch * cfg.train.epochs

    # --- model, optimiser, schedule ----------------------------------------------------------
    method = build_model(cfg).to(device, memory_format=memory_format)
    if world > 1 and cfg.model.sync_batchnorm:
        method = convert_sync_batchnorm(method, device)
    model = (
        DistributedDataParallel(method, device_ids=[device.index] if device.type == "cuda" else None)
        if world > 1
        else method
    )
    if cfg.train.compile:
        model = torch.compile(model)
    scaler = grad_scaler(precision, device)  # a no-op unless fp16
    optimizer = build_optimizer(cfg.optim, method, batch)
    if dist.is_main():  # the logged lr follows the schedule from this peak
        print(describe_lr(cfg.optim, batch), file=sys.stderr)
    scheduler = warmup_cosine(
        optimizer, round(cfg.optim.warmup_epochs * steps_per_epoch), total_steps, cfg.optim.min_lr_ratio
    )
    guard = NonFiniteGuard(cfg.train, method, run_dir)  # also the gate of each update, below
    collapse = CollapseMonitor(cfg.train, run_dir)  # also the collapse alarm, after each log line
    hooks = [
        SparseHeadRegularizer(cfg.sparsity, method.sparse_head(), total_steps),
        guard,
        OnlineMonitor(
            cfg.eval,
            method.backbone.feature_dim,
            len(data.classes),
            device,
            knn=lambda: knn_summary(method, cfg, views, device),  # every rank does its share
        ),
        collapse,
        MethodAfterStep(method, total_steps),
    ]
    augment_rng = torch.Generator(device=device)
    augment_rng.manual_seed(cfg.train.seed * 1_000_003 + rank)  # per-rank views, reproducible
    state = TrainState(method, optimizer, scheduler, scaler, hooks, augment_rng)

    # --- resume exactly: weights, optimiser, schedule, every random state, the data position ------
    if resumed is not None:
        path, saved = resumed
        resume.check_data_position(saved, len(data), steps_per_epoch, force)
        state.load_state_dict(saved)
        if dist.is_main():
            print(f"resuming {run_dir} from {path.name} (step {state.step})", file=sys.stderr)
    if dist.is_main():
        checkpoint.check_free_space(run_dir, method)
        RunDir(run_dir).write_config(cfg)
        environment = provenance.environment(device)
        RunDir(run_dir).write_environment(environment)
    logger = MetricLogger(
        run_dir,
        enabled=dist.is_main(),
        loggers=cfg.train.loggers,
        start_step=state.step,
        run_info={"config": config.to_dict(cfg), "environment": environment} if dist.is_main() else None,
        wandb_project=cfg.train.wandb_project,
    )
    saved_at = None  # the step of the last checkpoint this process wrote

    def save_checkpoint() -> int:
        step = state.step
        guard.check_parameters(step)
        entries = state.state_dict()  # a collective: every rank takes part
        if dist.is_main():
            checkpoint.save(
                run_dir,
                {
                    **entries,
                    "epoch": step // steps_per_epoch,
                    "data_position": resume.data_position(step, steps_per_epoch, len(data)),
                    "config": config.to_dict(cfg),
                    "schema": SCHEMA,
                    "data_mean": mean,
                    "data_std": std,
                },
                step,
                keep=cfg.train.keep_checkpoints,
            )
        return step

    # --- the loop ------------------------------------------------------------------------------
    last_step = min(total_steps, cfg.train.max_steps or total_steps)
    bar = tqdm(
        total=last_step,
        initial=state.step,
        desc="pretrain",
        unit="step",
        dynamic_ncols=True,
        disable=not (cfg.train.progress and dist.is_main()),
    )
    # A stop signal (train.preempt_signals) sets a flag that is read at the step boundaries below;
    # the loop then checkpoints and leaves with PreemptedError (exit status 75: resume me).
    preempted, stop_flag = None, StopFlag()
    model.train()
    with StopSignals(cfg.train.preempt_signals) as stop:
        while state.step < last_step:
            epoch, first_batch = divmod(state.step, steps_per_epoch)
            method.set_epoch(epoch)
            for images, labels in feed.epoch(epoch, first_batch):
                for hook in hooks:
                    hook.before_step()
                crops = views(images.to(device, non_blocking=True), augment_rng)  # global views, then local
                with autocast(precision, device):  # the losses themselves run in float32
                    ssl_loss, logs, r, z = model(*crops)
                for hook in hooks:
                    hook.observe(labels, r, z)
                pen = total_penalty(hooks)
                loss = ssl_loss + pen
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                # NaN/Inf: stop (train.nonfinite=stop) or skip the update; under fp16 the scaler
                # itself skips steps whose gradients overflowed, so only the loss is checked then;
                # after an update either skipped, the hooks do not shrink, prune or move the EMA.
                if guard.check(state.step + 1, loss, check_grads=not scaler.is_enabled()) and scaler_step(
                    scaler, optimizer
                ):
                    lr = scheduler.get_last_lr()[0]
                    for hook in hooks:
                        hook.after_step(state.step + 1, lr)
                scheduler.step()
                state.step += 1
                step = state.step
                bar.update(1)
                if step % cfg.train.log_every == 0 or step == last_step:
                    record = {
                        "step": step,
                        "epoch": step / steps_per_epoch,
                        "loss": dist.mean_over_ranks(ssl_loss.detach()).item(),  # a collective
                        "penalty": pen.item(),
                        "lr": scheduler.get_last_lr()[0],
                        **logs,
                        **gathered(hooks, lambda h: h.logs()),
                    }
                    logger.log(record)
                    bar.set_postfix(loss=f"{record['loss']:.4f}", **collapse.alarm(step))
                if step < last_step and (due := gathered(hooks, lambda h: h.end_of_epoch(step, steps_per_epoch))):
                    logger.log({"step": step, "epoch": step / steps_per_epoch, **due})
                if cfg.train.checkpoint_every and step % cfg.train.checkpoint_every == 0:
                    saved_at = save_checkpoint()
                sigkill_point("step", step)
                if stop_flag.any_rank(stop.requested):  # a collective: all ranks stop here
                    preempted = stop.requested or "a signal to another rank"
                if step >= last_step or preempted or collapse.stop:
                    break
            if preempted or collapse.stop:
                break
        bar.close()
        if saved_at != state.step:  # the loop's last checkpoint_every save may already be this step's
            save_checkpoint()
    # The DDP wrapper's Reducer holds the process group: freed after dist.cleanup() destroyed the
    # group, its destructor waits on gloo's thread forever (torch 2.11). Release it while the group lives.
    del model
    gc.collect()

    if collapse.stop:  # train.on_collapse=stop: the checkpoint of this step is saved above
        logger.close()
        dist.cleanup()
        raise CollapseError(collapse.stop)
    if preempted and state.step < last_step:
        requeued = cfg.train.on_preempt == "requeue" and dist.is_main() and preempt.requeue()
        logger.close()
        dist.cleanup()
        raise preempt.PreemptedError(run_dir, state.step, preempted, requeued)

    # --- k-NN of the frozen backbone (the paper's k = 5 vote and the k = 200 monitor) ----------
    summary = {"run_dir": str(run_dir), "steps": state.step}
    summary.update(knn_summary(method, cfg, views, device))  # every rank does its share
    if dist.is_main():
        RunDir(run_dir).write_results(summary)
        logger.log({"step": state.step, **{k: v for k, v in summary.items() if k.startswith("knn")}})
    logger.close()
    dist.cleanup()
    return summary
