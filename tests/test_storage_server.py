"""The Optuna study on a real PostgreSQL server: bounded connections, a server restart ridden out by retries
(also mid-sweep), and a server that stays down stopping the sweep with a clear message instead of a hang."""

from __future__ import annotations

import threading
import time

import pytest

from qtts_sweep.sweep.storage import POOL, StorageUnavailable, make_storage
from tests.helpers.sweeps import tiny_sweep


def _study(storage, name: str):
    import optuna

    return optuna.create_study(study_name=name, storage=storage, load_if_exists=True)


def test_connections_are_bounded_per_driver(pg_cluster):
    storage = make_storage(pg_cluster.url(pg_cluster.create_db("bounded"), with_password=True))
    pool = storage.rdb.engine.pool
    assert (pool.size(), pool._max_overflow) == (POOL["pool_size"], POOL["max_overflow"])
    assert storage.rdb.engine.pool._pre_ping


def test_restart_is_ridden_out(pg_cluster, capsys):
    storage = make_storage(pg_cluster.url(pg_cluster.create_db("restart"), with_password=True))
    study = _study(storage, "restart")
    study.tell(study.ask(), 1.0)
    pg_cluster.stop()
    threading.Timer(2.0, pg_cluster.start).start()  # back after 2 s; the next call waits for it
    t0 = time.monotonic()
    study.tell(study.ask(), 2.0)
    assert time.monotonic() - t0 >= 1.5
    assert [t.value for t in study.get_trials()] == [1.0, 2.0]
    assert "storage connection lost" in capsys.readouterr().err


def test_server_down_stops_with_a_clear_message(pg_cluster):
    url = pg_cluster.url(pg_cluster.create_db("down"), with_password=True)
    storage = make_storage(url, retry_s=1.5)
    study = _study(storage, "down")
    pg_cluster.stop()
    try:
        t0 = time.monotonic()
        with pytest.raises(StorageUnavailable) as err:
            study.ask()
        assert time.monotonic() - t0 < 5
    finally:
        pg_cluster.start()
    msg = str(err.value)
    assert pg_cluster.password not in msg
    assert f"qtts:***@127.0.0.1:{pg_cluster.port}/down" in msg
    assert "did not answer" in msg and "run the same command again" in msg


@pytest.mark.slow
def test_sweep_survives_a_restart(pg_cluster, tmp_path, tiny_model_dir):
    """A 2-trial tiny sweep on PostgreSQL; the server restarts while the first trial runs; both trials complete."""
    import optuna
    from optuna.trial import TrialState

    url = pg_cluster.url(pg_cluster.create_db("midsweep"), with_password=True)
    make_storage(url)  # the schema, before the watcher below and the driver both reach for it
    driver = tiny_sweep(tmp_path, tiny_model_dir, n_trials=2, storage=url)
    restarted = threading.Event()

    def restart_when_running():
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                study = optuna.load_study(study_name="tiny", storage=url)
                if study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                    pg_cluster.restart()
                    restarted.set()
                    return
            except Exception:
                pass
            time.sleep(0.2)

    watcher = threading.Thread(target=restart_when_running, daemon=True)
    watcher.start()
    outcome = driver.run()
    watcher.join(timeout=5)
    assert restarted.is_set()
    states = [t.state for t in optuna.load_study(study_name="tiny", storage=url).get_trials()]
    assert states.count(TrialState.COMPLETE) == 2 and outcome.completed == 2, states
