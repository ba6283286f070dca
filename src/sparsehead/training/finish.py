"""Finish: after the last step, the last checkpoint, the hooks' verdicts (a collapse, a pre-emption),
then the final k-NN of the frozen backbone and the run's results."""

from __future__ import annotations

from sparsehead.core import distributed as dist
from sparsehead.runs.folder import RunDir
from sparsehead.training.hooks import gathered
from sparsehead.training.monitors import knn_summary
from sparsehead.training.run import Run


def finish(run: Run) -> dict:
    """The run's summary (results.json): its folder, its steps, the k-NN numbers (the paper's k = 5 vote
    and the k = 200 monitor). A collective under DDP: every process does its share of the k-NN."""
    run.bar.close()
    step = run.state.step
    if late := gathered(run.hooks, lambda h: h.final_logs(step)):
        run.logger.log({"step": step, "epoch": step / run.steps_per_epoch, **late})
    if run.saved_at != step:  # the last checkpoint_every save may already be this step's
        run.save_checkpoint()
    run.release_model()
    for hook in run.hooks:
        hook.at_end(step, finished=step >= run.last_step)
    summary = {"run_dir": str(run.run_dir), "steps": step}
    summary.update(knn_summary(run.method, run.cfg, run.views, run.device))
    if dist.is_main():
        RunDir(run.run_dir).write_results(summary)
        run.logger.log({"step": step, **{k: v for k, v in summary.items() if k.startswith("knn")}})
    return summary
