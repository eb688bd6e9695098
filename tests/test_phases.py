"""The phase clock behind the benches' breakdown: nested phases count once, a driver's phases reach the study."""

from __future__ import annotations

import time

import optuna

from qtts_sweep.sweep import phases


def test_nested_phases_are_exclusive_and_sum_to_no_more_than_wall():
    clock = phases.PhaseClock()
    t0 = time.perf_counter()
    with clock("storage"):
        time.sleep(0.02)
        with clock("mlflow"):
            time.sleep(0.05)
    wall = time.perf_counter() - t0
    s = clock.as_dict()
    assert 0.05 <= s["mlflow"] < 0.07 and 0.02 <= s["storage"] < 0.045  # the MLflow call is not storage too
    assert sum(s.values()) <= wall


def test_timed_proxy_times_every_call_and_passes_attributes():
    class Tracker:
        enabled = True

        def call(self, x):
            time.sleep(0.02)
            return x + 1

    clock = phases.PhaseClock()
    tracker = clock.timed(Tracker(), "mlflow")
    assert tracker.enabled is True and tracker.call(1) == 2
    assert clock.as_dict()["mlflow"] >= 0.02


def test_warm_up_attributes_the_tail_the_driver_waited_for():
    worker = {"dataset": 1.0, "model": 2.0}
    assert phases.warm_up(1.5, worker) == {"worker_start": 0.0, "dataset": 0.0, "model": 1.5}
    assert phases.warm_up(5.0, worker) == {"worker_start": 2.0, "dataset": 1.0, "model": 2.0}
    assert phases.warm_up(0.0, worker) == {"worker_start": 0.0, "dataset": 0.0, "model": 0.0}


def test_recorded_phases_are_read_back_and_the_table_has_every_row():
    study = optuna.create_study()
    clock = phases.PhaseClock()
    clock.add("storage", 1.0)
    phases.record(study, clock, wall=4.0)
    got = phases.read(study)
    assert len(got) == 1 and got[0]["storage"] == 1.0 and got[0]["wall"] == 4.0
    table = phases.breakdown({"run": (4.0, phases.mean_phases(got))})
    assert any(line.startswith("storage") and "1.00 s" in line and "25.0%" in line for line in table)
    assert any(line.startswith("other (unaccounted)") and "3.00 s" in line for line in table)
