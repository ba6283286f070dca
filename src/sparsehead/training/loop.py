"""Pretraining: setup, then the step, repeated, with what happens between steps, then finish.

setup (training/setup.py) builds everything once; train_step (training/step.py) is one optimisation
step and nothing else; finish (training/finish.py) saves the last state and writes the results. Every
monitor, guard and stop request is a step hook (core/step_hook.py), called the same way as the others."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from sparsehead.config import Config
from sparsehead.training.finish import finish
from sparsehead.training.hooks import stop_reasons
from sparsehead.training.setup import setup
from sparsehead.training.step import train_step


def pretrain(cfg: Config, run_dir: Optional[str | Path] = None, force: bool = False) -> dict:
    """Pretrain as `cfg` says; resume when `run_dir` already holds a checkpoint made with the same config
    (force: even when other keys than resume.RESUME_MAY_DIFFER differ). Returns the summary."""
    run = setup(cfg, run_dir, force)
    with run:  # on any exit: signal handlers put back, the logger closed, the process group left
        for images, labels in run.batches():
            out = train_step(run, images, labels)
            step = run.state.step
            run.bar.update(1)
            if step % cfg.train.log_every == 0 or step == run.last_step:
                run.log(out)
            run.log_epoch_end()
            if cfg.train.checkpoint_every and step % cfg.train.checkpoint_every == 0:
                run.save_checkpoint()
            if stop_reasons(run.hooks, step):  # a stop signal (on any process), the collapse alarm
                break
        return finish(run)
