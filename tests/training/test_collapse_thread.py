"""The collapse monitor's spectra on a CPU thread (train.collapse_spectra=thread): the measures a
logging step receives are the synchronous ones of the previous logging step's window, named by
collapse/step; the alarm acts on them when they arrive; the end of a run waits for the last ones;
under DDP every process receives the same at the same step; the training is bitwise the same with
the monitor on or off, and no thread outlives a run."""

from __future__ import annotations

import threading

import pytest
import torch
from test_collapse import batches, monitor

from conftest import TINY, assert_same_training_state
from ddp_harness import WORLD, run_on_ranks, shard
from sparsehead import config
from sparsehead.runs import checkpoint
from sparsehead.runs.metrics_log import read_metrics
from sparsehead.training.collapse import CollapseError
from sparsehead.training.collapse_worker import THREAD_NAME
from sparsehead.training.loop import pretrain

THREAD = "train.collapse_spectra=thread"


def spectra_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == THREAD_NAME]


def logged(mon, step: int) -> dict:
    """A logging step as the run makes it: logs, then notes."""
    out = mon.logs()
    mon.notes(step)
    return out


def test_each_logging_step_receives_the_synchronous_measures_of_the_previous_ones_window():
    threaded, synchronous = monitor(96, THREAD), monitor(96, "train.collapse_spectra=step")
    received, expected = {}, {}
    for step, (r, z) in enumerate(batches(6, 32), start=1):  # the ring wraps
        for mon in (threaded, synchronous):
            mon.observe(torch.zeros(32), r, z)
        if step % 2 == 0:
            received[step] = logged(threaded, step)
            expected[step] = logged(synchronous, step)
    assert received[2] == {}  # nothing measured before
    for step in (4, 6):
        assert received[step] == {**expected[step - 2], "collapse/step": step - 2}  # the same numbers, bitwise
    assert threaded.final_logs(6) == {**expected[6], "collapse/step": 6}  # the run's end waits for the last
    assert threaded.pending is None and not spectra_threads()
    assert threaded.final_logs(6) == {}  # once


def test_the_alarm_acts_when_the_measures_arrive_and_the_end_of_a_run_waits_for_them():
    constant = torch.ones(32, 80)  # everything on one point: effective rank 0
    mon = monitor(32, THREAD, "train.collapse_threshold=0.1", "train.on_collapse=stop")
    mon.observe(torch.zeros(32), constant, (constant[:, :16], constant[:, :16]))
    logged(mon, 1)
    assert mon.stop_reason(1) is None  # measured on a thread: no verdict at this step
    mon.observe(torch.zeros(32), constant, (constant[:, :16], constant[:, :16]))
    assert logged(mon, 2)["collapse/step"] == 1
    assert mon.stop_reason(2) == "the collapse alarm"
    with pytest.raises(CollapseError, match=r"at step 2: .* r \S+/32, z 0.0/16 .* 32 embeddings of step 1"):
        mon.at_end(2, finished=False)  # collects the window of step 2 first: no thread left
    assert not spectra_threads()

    warn = monitor(32, THREAD, "train.collapse_threshold=0.1")
    warn.observe(torch.zeros(32), constant, (constant[:, :16], constant[:, :16]))
    logged(warn, 5)  # the last logging step: its measures arrive only at the run's end
    with pytest.warns(UserWarning, match=r"collapse alarm at step 7: .* embeddings of step 5\)"):
        warn.at_end(7, finished=True)


def test_a_thread_whose_measures_fail_costs_the_log_line_not_the_run(monkeypatch):
    from sparsehead.training import collapse

    def fail(rows):
        raise torch.linalg.LinAlgError("eigh did not converge")

    monkeypatch.setattr(collapse, "window_measures", fail)
    mon = monitor(8, THREAD)
    mon.observe(torch.zeros(8), torch.randn(8, 8), (torch.randn(8, 4), torch.randn(8, 4)))
    logged(mon, 1)
    with pytest.warns(UserWarning, match="collapse monitor: no measures at this step .*did not converge"):
        assert logged(mon, 2) == {}  # the failure surfaces in the training thread, when collected
    with pytest.warns(UserWarning, match="collapse monitor: no measures at this step"):
        assert mon.final_logs(3) == {}
    assert mon.stop_reason(3) is None and not spectra_threads()


def _ranks_receive(rank: int) -> dict:
    mon, out = monitor(128, THREAD), {}
    for step, (r, z) in enumerate(batches(4, 64), start=1):  # each rank observes its shard: 32 rows a step
        mon.observe(torch.zeros(32), shard(r, rank), tuple(shard(v, rank) for v in z))
        out.update({f"{step}:{k}": torch.tensor(v, dtype=torch.float64) for k, v in logged(mon, step).items()})
    out.update({f"end:{k}": torch.tensor(v, dtype=torch.float64) for k, v in mon.final_logs(4).items()})
    out["threads"] = torch.tensor(len(spectra_threads()))
    return out


def test_under_ddp_every_process_receives_the_same_measures_at_the_same_step():
    whole, expected = monitor(128, "train.collapse_spectra=step"), {}
    for step, (r, z) in enumerate(batches(4, 64), start=1):
        for rank in range(WORLD):  # the same rows as the ranks' windows hold together
            whole.observe(torch.zeros(32), shard(r, rank), tuple(shard(v, rank) for v in z))
        expected[step] = logged(whole, step)
    first, second = run_on_ranks(_ranks_receive)
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    for step, at in ((1, "2"), (2, "3"), (3, "4"), (4, "end")):
        got = {k.split(":", 1)[1]: float(v) for k, v in first.items() if k.startswith(f"{at}:")}
        assert got == pytest.approx({**expected[step], "collapse/step": step}, rel=1e-12)
    assert int(first["threads"]) == 0


# --- end to end on digits -------------------------------------------------------------------------

RUN = TINY + ["data.subset=256", "train.max_steps=3", "train.threads=1", "train.checkpoint_every=0"]


def test_the_training_is_bitwise_the_same_with_the_monitor_on_a_thread_or_off(tmp_path):
    states = {}
    for name, monitor_option in (("off", "train.collapse_monitor=false"), ("thread", THREAD)):
        pretrain(config.load(None, [*RUN, monitor_option]), tmp_path / name)
        assert not spectra_threads()  # the run waited for its last window's measures
        states[name] = checkpoint.load(checkpoint.find(tmp_path / name))
    assert_same_training_state(states["off"], states["thread"], 3, "the monitor on a thread changed the training")
    lines = [line for line in read_metrics(tmp_path / "thread") if "loss" in line]
    assert [line.get("collapse/step") for line in lines] == [None, 1, 2]  # log_every=1: the previous step's window
    last = [line for line in read_metrics(tmp_path / "thread") if line.get("collapse/step") == 3]
    assert len(last) == 1 and "r/effective_rank" in last[0]  # the last window's measures, logged at the end


@pytest.mark.cuda
def test_on_a_gpu_the_window_goes_to_a_thread_through_pinned_memory_with_the_cpu_measures():
    gpu, cpu = monitor(96), monitor(96, "train.collapse_spectra=step")  # auto: a thread on a GPU
    for r, z in batches(4, 32):
        gpu.observe(torch.zeros(32), r.to("cuda"), tuple(v.to("cuda") for v in z))
        cpu.observe(torch.zeros(32), r, z)
    assert logged(gpu, 4) == {} and gpu.pending is not None
    expected = logged(cpu, 4)
    gpu.observe(torch.zeros(32), torch.full((32, 80), 7.0, device="cuda"), (torch.ones(32, 16, device="cuda"),) * 2)
    assert gpu.final_logs(5) == {**expected, "collapse/step": 4}  # the copy, not the ring the step overwrote
    assert not spectra_threads()
