"""Sweeps: the only package that drives Optuna's study machinery (create_study, ask, tell, samplers, pruners).

Owns: sweep files (`spec`), the trial loop (`driver`, over a study session `session` and a trial runner `trials`), the
worker process, its pipe protocol and what its fork server imports (`worker`, `protocol`, `preload`), Optuna storage
(`storage`), samplers and pruners (`search`), trial heartbeats (`heartbeat`), stale-trial recovery and the one re-queue
policy (`recovery`), a trial's result record (`result`), multi-fidelity over lines (`fidelity`), warm start from earlier
studies (`warm_start`), the simulated search of `bench search` (`simulation`), the Hydra sweeper entry, blind listening
(`listen`, `preference`), and the end-of-sweep report. Does not own: what a trial computes (`qtts_sweep.train`,
`qtts_sweep.evaluate`), MLflow calls (`qtts_sweep.tracking`), promotion (`qtts_sweep.production`).

Modules: `driver`, `fidelity`, `heartbeat`, `hydra_app`, `launch`, `listen`, `phases`, `preference`, `preload`,
`progress`, `protocol`, `record`, `recovery`, `report`, `result`, `search`, `selection`, `session`, `simulation`,
`slurm`, `spec`, `storage`, `trials`, `warm_start`, `worker`.
Imports from the package: config, data, evaluate, metrics, model, tracking, train, util.
"""
