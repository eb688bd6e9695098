"""The Hydra application for users who launch sweeps with Hydra's own multirun:

    python -m qtts_sweep.sweep.hydra_app --multirun hydra/sweeper=qtts hydra.sweeper.sweep=tiny [overrides]

The sweeper plugin (hydra_plugins/qtts_sweep_sweeper) hands over to `launch.run_sweep`, the same path as
`qtts-sweep sweep <name>` (which composes without Hydra's command line). The task function is never called per
trial: the sweeper dispatches trials to a persistent worker process (crash isolation, base model kept loaded),
which Hydra's launchers cannot do.
"""

from __future__ import annotations

import sys

from qtts_sweep.config.loader import CONF_DIR
from qtts_sweep.util.log import get_logger

log = get_logger(__name__)


def run(argv: list[str]) -> int:
    import hydra
    from omegaconf import DictConfig

    from qtts_sweep.config.loader import register_resolvers
    from qtts_sweep.config.schema import register_configs

    register_resolvers()
    register_configs()

    @hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
    def app(cfg: DictConfig) -> None:
        log.error("qtts-sweep's Hydra app only runs sweeps: --multirun hydra/sweeper=qtts hydra.sweeper.sweep=NAME")

    old = sys.argv
    sys.argv = ["qtts-sweep-sweep", *argv]
    try:
        app()
    finally:
        sys.argv = old
    return 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
