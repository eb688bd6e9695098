"""Hydra sweeper plugin `hydra/sweeper=qtts`: a thin shim over `qtts_sweep.sweep.driver`, no logic of its own.

It lives here only because Hydra loads sweepers from the `hydra_plugins` namespace package. No
`from __future__ import annotations`: Hydra imports plugin modules without registering them in sys.modules,
and dataclasses then cannot resolve string annotations.
"""

from dataclasses import dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper


@dataclass
class QttsSweeperConf:
    _target_: str = "hydra_plugins.qtts_sweep_sweeper.qtts_sweep_sweeper.QttsSweeper"
    sweep: str = "tiny"  # a name in sweeps/ or a path to a sweep YAML file
    workers: int = 1  # driver processes on one study (qtts_sweep.sweep.launch.run_local_workers)
    devices: str = ""  # e.g. "0,1,3"; empty: every GPU in turn, else CPU threads shared out


ConfigStore.instance().store(group="hydra/sweeper", name="qtts", node=QttsSweeperConf, provider="qtts_sweep")


class QttsSweeper(Sweeper):
    def __init__(self, sweep: str, workers: int = 1, devices: str = "") -> None:
        self.sweep_name = sweep
        self.workers = workers
        self.devices = devices
        self.context: dict = {}

    def setup(self, *, hydra_context: Any, task_function: Any, config: Any) -> None:
        self.context = {"hydra_context": hydra_context, "config": config}

    def sweep(self, arguments: list[str]) -> Any:
        from qtts_sweep.sweep.launch import sweep_from_hydra

        return sweep_from_hydra(self.sweep_name, arguments, workers=self.workers, devices=self.devices, **self.context)
