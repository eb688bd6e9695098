"""A running trial's heartbeat, the same on every Optuna storage (the journal file included).

Owns: the heartbeat thread and its period (HEARTBEAT_S), and the grace period after which a silent trial of
another driver is stale (GRACE_S; recovery.py applies it). Does not own: deciding staleness (recovery.py).
"""

from __future__ import annotations

import os
import threading
import time

# Trial heartbeat period, and how long a RUNNING trial of another driver must be silent to be stale (the env
# variables let the fault tests use seconds instead of tens of seconds). Heartbeats carry the writer's wall
# time: across nodes keep clocks in sync (NTP) and GRACE_S well above any skew.
HEARTBEAT_S = float(os.environ.get("QTTS_HEARTBEAT_S", "5"))
GRACE_S = float(os.environ.get("QTTS_STALE_GRACE_S", "20"))


class TrialHeartbeat:
    """A running trial's heartbeat: its `heartbeat` user attribute, [beat count, writer's wall time], rewritten
    every HEARTBEAT_S from a thread through Optuna's public `trial.set_user_attr`. The same mechanism for every
    storage (Optuna's own heartbeat exists only for RDBStorage and cannot tell a dead driver from one that lost
    its database for a while: recovery.recover_stale). Stops by itself once the trial is finished."""

    def __init__(self, trial) -> None:
        self._stop = threading.Event()
        self._trial = trial
        self._beats = 0
        self._beat()
        self._thread = threading.Thread(target=self._run, daemon=True, name="trial-heartbeat")
        self._thread.start()

    def _beat(self) -> None:
        self._beats += 1
        self._trial.set_user_attr("heartbeat", [self._beats, time.time()])

    def _run(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                self._beat()
            except Exception:  # the trial finished (here or by another driver), or the storage gave up
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=HEARTBEAT_S + 1)
