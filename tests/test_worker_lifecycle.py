"""The trial worker never outlives its driver, whatever moment a stop arrives at.

The worker ignores SIGTERM and SIGINT (a scheduler's stop and Ctrl-C reach the whole process group; the driver
handles them and must not lose the worker half-way through a write). So the worker dies only when the driver stops
it: multiprocessing's own clean-up at exit sends SIGTERM and then waits without a limit, which hung a SLURM job for
15 minutes in CI (a `scancel --signal=TERM` that reached a driver while its study was opening).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest

from qtts_sweep.util.procs import pid_alive
from tests.helpers.sweeps import tiny_sweep

# A driver process whose code ends (here by an exception, as a signal at the wrong moment does) while its worker is
# up and ignoring SIGTERM, without anyone calling WorkerHandle.stop.
_LEFT_BEHIND = textwrap.dedent(
    """
    import sys
    import time
    from qtts_sweep.sweep.protocol import WorkerHandle
    from qtts_sweep.sweep.worker import worker_main

    handle = WorkerHandle(worker_main, 1)
    handle.ensure()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # until the worker ignores SIGTERM (bit 15 of SigIgn): inside worker_main
        with open(f"/proc/{handle.proc.pid}/status") as f:
            ignored = int(next(line for line in f if line.startswith("SigIgn:")).split()[1], 16)
        if ignored & (1 << 14):
            break
        time.sleep(0.05)
    else:
        raise SystemExit("the worker never reached worker_main")
    print(handle.proc.pid, flush=True)
    if "--wait" in sys.argv:
        time.sleep(120)  # until the test kills this driver with SIGKILL
    raise KeyboardInterrupt
    """
)


def test_a_driver_that_ends_without_stopping_its_worker_still_exits_and_takes_the_worker_with_it(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-c", _LEFT_BEHIND], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )  # fmt: skip
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        for pid in out.split():
            os.kill(int(pid), 9)
        pytest.fail(f"the driver process hung at exit with its worker alive:\n{err[-2000:]}")
    worker = int(out.split()[0])
    assert "KeyboardInterrupt" in err  # it ended the way the script ends, not by something else
    assert not pid_alive(worker), f"worker {worker} outlived its driver"


@pytest.mark.slow
def test_a_stop_while_the_study_opens_stops_the_worker_at_once(tmp_path, tiny_model_dir, monkeypatch):
    """A signal that arrives after the worker started but before the first trial (the study opening, recovery of
    stale trials) ends the driver and its worker there and then, not at interpreter exit."""
    from qtts_sweep.sweep.session import StudySession

    def interrupted(self, progress):
        raise KeyboardInterrupt  # what the driver's SIGTERM/SIGINT handler raises, at this moment

    driver = tiny_sweep(tmp_path, tiny_model_dir, n_trials=1)
    monkeypatch.setattr(StudySession, "open", interrupted)
    with pytest.raises(KeyboardInterrupt):
        driver.run()
    assert driver.worker.proc is None
    assert driver.worker.starts == 1


# the fork server imports the whole trial stack before its first fork (~15 s): slow, out of `make test-fast`
@pytest.mark.parametrize("start", [pytest.param("forkserver", marks=pytest.mark.slow), "spawn"])
def test_a_worker_lives_with_its_driver_and_leaves_within_seconds_of_a_kill_9(tmp_path, start):
    """The worker is not the driver's child when it forks from the fork server (QTTS_WORKER_START=spawn: it is): it
    watches the driver's pid, stays while the driver runs and exits when a SIGKILL ends the driver (no clean-up
    runs there), so an orphan never goes on holding a training lease."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "QTTS_WORKER_START": start}
    proc = subprocess.Popen(
        [sys.executable, "-c", _LEFT_BEHIND, "--wait"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=tmp_path, env=env,
    )  # fmt: skip
    try:
        worker = int(proc.stdout.readline())
        time.sleep(2.0)  # longer than the old once-a-second parent check
        assert pid_alive(worker) and proc.poll() is None, "the worker left while its driver still ran"
        parent = int(open(f"/proc/{worker}/stat").read().rsplit(")", 1)[1].split()[1])
        assert (parent == proc.pid) == (start == "spawn"), (start, parent, proc.pid)
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 10
    while pid_alive(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not pid_alive(worker), f"worker {worker} outlived its SIGKILLed driver by 10 s"
