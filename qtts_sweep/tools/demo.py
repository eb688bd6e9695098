"""`make demo` / `qtts-sweep demo`: the whole workflow on the tiny preset, offline, then where to look.

1. prepare the demo dataset (validate, resample to 24 kHz, split, codec codes; cached);
2. run the `tiny` sweep (12 trials of lr x epoch x LoRA scale) as a Hydra multirun through the qtts sweeper;
3. promote the best trial to a production bundle (scored once on the test split, registered in MLflow);
4. synthesize one line from the bundle;
5. print the best trial and the commands that open the MLflow UI and optuna-dashboard on 127.0.0.1.

Re-running it resumes the finished study: nothing is trained or scored again.
"""

from __future__ import annotations

import time

from qtts_sweep.config.schema import Config

DEMO_SWEEP = "tiny"
DEMO_LINE = "Hello, this is the promoted tiny voice; its weights were random, so expect noise."


def run_demo(cfg: Config, overrides: list[str]) -> None:
    from qtts_sweep.data.prepare import format_summary, prepare_dataset
    from qtts_sweep.production.bundle import BUNDLE_FILE
    from qtts_sweep.production.promote import format_promotion, promote
    from qtts_sweep.production.serve import production_synth
    from qtts_sweep.sweep.launch import closing_lines, launch
    from qtts_sweep.sweep.spec import load_spec
    from qtts_sweep.sweep.storage import default_storage

    t0 = time.perf_counter()
    spec = load_spec(DEMO_SWEEP)
    print(f"[1/4] preparing dataset `{cfg.data.name}`", flush=True)
    print(format_summary(prepare_dataset(cfg)), flush=True)
    print(f"\n[2/4] sweep `{DEMO_SWEEP}`: {spec.n_trials} trials over lr x epoch x LoRA scale", flush=True)
    launch(DEMO_SWEEP, overrides)
    storage = default_storage(cfg.paths.runs_dir)
    print("\n[3/4] promoting the best trial", flush=True)
    result = promote(cfg, spec.study_name, storage)
    print(format_promotion(result), flush=True)
    print("\n[4/4] synthesizing one line from the bundle", flush=True)
    print(production_synth(cfg, str(result.bundle / BUNDLE_FILE), [DEMO_LINE]), flush=True)
    print(f"\nDemo done in {time.perf_counter() - t0:.0f} s. Where to look:")
    print(f"  everything      : {cfg.paths.runs_dir}")
    print(
        f"  sweep report    : {cfg.paths.runs_dir}/sweeps/{spec.study_name}/report/ (top_trials.txt, plots, "
        "listening.html)"
    )
    print(f"  bundle          : {result.bundle}")
    print(closing_lines(cfg, spec.study_name, storage))
