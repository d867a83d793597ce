"""Tier 1 (pure): timers and percentiles."""

import time

import numpy as np
import pytest
import torch

from ddp_bench.launch.stopping import check_interval
from ddp_bench.measurement.timing import StageClock, StepTimer, percentile


@pytest.mark.parametrize("q", [0, 10, 50, 90, 100])
def test_percentile_matches_numpy(q):
    values = [5.0, 1.0, 9.0, 3.0, 7.5, 2.25]
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_percentile_of_nothing_is_nan():
    assert percentile([], 50) != percentile([], 50)


def test_stage_clock_accumulates_only_while_running():
    clock = StageClock(torch.device("cpu"))
    clock.start()
    time.sleep(0.05)
    clock.stop()
    time.sleep(0.5)  # paused: not counted (counted, the total would pass 0.6 s)
    clock.start()
    time.sleep(0.05)
    elapsed = clock.stop()
    assert 0.09 < elapsed < 0.4  # loose above: a busy CI machine wakes sleepers late


def test_step_timer_records_each_step_on_cpu():
    timer = StepTimer(torch.device("cpu"))
    for pause in (0.01, 0.2):
        timer.start()
        time.sleep(pause)
        timer.stop()
    first, second = timer.durations_ms()
    # Loose above, as a busy CI machine wakes sleepers late; the pauses are far enough apart that the order
    # still shows each step was recorded separately and in order.
    assert 9 < first < 150 and 199 < second < 500


def test_stopping_a_timer_that_never_started_is_an_error():
    with pytest.raises(RuntimeError):
        StepTimer(torch.device("cpu")).stop()
    with pytest.raises(RuntimeError):
        StageClock(torch.device("cpu")).stop()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_event_timer_counts_queued_gpu_work():
    device = torch.device("cuda")
    a = torch.randn(4096, 4096, device=device)
    timer = StepTimer(device)
    timer.start()
    for _ in range(20):
        a = a @ a / 4096
    timer.stop()
    (ms,) = timer.durations_ms()
    assert ms > 0.5  # 20 large matmuls cannot take less; without events the host would see ~0


@pytest.mark.parametrize(
    "warmup_step_s, every",
    [(0.0, 1), (2.0, 1), (0.1, 5), (0.001, 500), (1e-6, 1000)],  # no warm-up, slow, medium, fast, capped
)
def test_stop_checks_come_about_twice_a_second(warmup_step_s, every):
    assert check_interval(warmup_step_s) == every
