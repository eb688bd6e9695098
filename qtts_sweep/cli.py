"""The `qtts-sweep` console script: argument parsing only; each subcommand calls one library function.

Importing this module imports neither torch nor Hydra, so `qtts-sweep --help` answers instantly. Hydra
overrides (`key=value`, `group=option`) pass straight through; free text (lines to speak) is an option or a
file, never an override, so commas and quotes survive.
"""

from __future__ import annotations

import argparse
import sys

from qtts_sweep.util import quiet
from qtts_sweep.util.log import get_logger

log = get_logger(__name__)

VERBOSE_HELP = "show every library warning, log line and banner (also in worker and driver processes)"


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. model=tiny train.lr=1e-4")
    p.add_argument("--config-dir", help="extra config folder searched before the shipped conf/")


def _cmd_check(args: argparse.Namespace) -> int:
    from qtts_sweep.config.loader import load_config, to_yaml

    print(to_yaml(load_config(args.overrides, args.config_dir)), end="")
    return 0


def _cmd_make_tiny_model(args: argparse.Namespace) -> int:
    from qtts_sweep.config.loader import load_config
    from qtts_sweep.model.tiny import build_tiny_model, folder_digest

    cfg = load_config(["model=tiny", f"model.tiny_seed={args.seed}", *args.overrides], args.config_dir)
    out = build_tiny_model(args.out or cfg.model.source, seed=args.seed)
    print(f"tiny preset written to {out}\nsha256 of the folder: {folder_digest(out)}")
    return 0


def _cmd_prepare(args: argparse.Namespace) -> int:
    from qtts_sweep.config.loader import load_config
    from qtts_sweep.data.prepare import format_summary, prepare_dataset

    print(format_summary(prepare_dataset(load_config(args.overrides, args.config_dir))))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from qtts_sweep.config.loader import load_config
    from qtts_sweep.train.loop import ensure_epoch, format_result, resolve_run

    cfg = load_config(args.overrides, args.config_dir)
    run = resolve_run(cfg)
    print(format_result(ensure_epoch(cfg, cfg.train.epochs, run=run), run))
    return 0


def _cmd_synth(args: argparse.Namespace) -> int:
    from pathlib import Path

    from qtts_sweep.config.loader import load_config
    from qtts_sweep.evaluate.synth_command import run_synth

    texts = list(args.text or [])
    if args.text_file:
        texts += [t.strip() for t in Path(args.text_file).read_text(encoding="utf-8").splitlines() if t.strip()]
    cfg = load_config(args.overrides, args.config_dir, check_model=not args.production)  # the bundle's base
    if args.production:
        from qtts_sweep.production.serve import production_synth

        print(_with_bundle(cfg, args.production, lambda: production_synth(cfg, args.production, texts, args.out)))
        return 0
    print(run_synth(cfg, texts, args.base, args.out))
    return 0


# report, promote, gc, export and synth --production load their config with check_model=False: the model they
# use (if any) is the one a trial's checkpoint or a bundle names, not the `model` group's default.


def _with_bundle(cfg, where: str, use):
    """Run `use()` on the bundle `where`, turning a missing bundle or unknown registry URI into a listed error."""
    from qtts_sweep.production.lookup import REGISTRY_SCHEMES, registry_not_found, require_bundle

    require_bundle(where, cfg.paths.production_dir, registry_on=cfg.tracking.backend != "none")
    try:
        return use()
    except Exception as exc:
        # mlflow is imported only in qtts_sweep.tracking: recognise its errors by module, not by class.
        if where.startswith(REGISTRY_SCHEMES) and type(exc).__module__.startswith("mlflow"):
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise registry_not_found(where, cfg.tracking.tracking_uri, reason, cfg.paths.production_dir) from exc
        raise


def _cmd_promote(args: argparse.Namespace) -> int:
    import dataclasses
    from pathlib import Path

    from qtts_sweep.config.loader import load_config
    from qtts_sweep.production.promote import format_promotion, promote
    from qtts_sweep.sweep.storage import default_storage_for

    overrides = list(args.overrides)
    if args.stress is not None:  # options, not overrides: a path with commas or spaces survives
        overrides.append(f"production.stress.lines={args.stress}")
    cfg = load_config(overrides, args.config_dir, check_model=False)
    if args.text_file:
        stress = dataclasses.replace(cfg.production.stress, text_file=str(Path(args.text_file).resolve()))
        cfg = dataclasses.replace(cfg, production=dataclasses.replace(cfg.production, stress=stress))
    storage = args.storage or default_storage_for(args.study, cfg.paths.runs_dir)
    result = promote(cfg, args.study, storage, args.trial, args.name)
    print(format_promotion(result))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from qtts_sweep.config.loader import load_config
    from qtts_sweep.production.export import export_merged

    cfg = load_config(args.overrides, args.config_dir, check_model=False)
    out = _with_bundle(cfg, args.bundle, lambda: export_merged(cfg, args.bundle, args.out, args.speaker))
    print(
        f"merged custom-voice model written to {out}\n"
        f"  load it with: Qwen3TTSModel.from_pretrained('{out}').generate_custom_voice(text, speaker=..., "
        "language='auto', non_streaming_mode=True)"
    )
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    import os

    from qtts_sweep.sweep import launch
    from qtts_sweep.util.urls import SECRET_OVERRIDES_ENV

    names = (launch.STORAGE_ENV, SECRET_OVERRIDES_ENV)
    before = {name: os.environ.get(name) for name in names}
    try:
        return _sweep(args)
    finally:  # called in-process (tests, library use): the storage must not leak into later commands
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _sweep(args: argparse.Namespace) -> int:
    import os

    from qtts_sweep.sweep import launch as sweep

    if args.storage:  # through the environment: a password in a URL never lands in argv, Hydra's files or logs
        os.environ[sweep.STORAGE_ENV] = args.storage
    if args.plan:
        print(sweep.plan_sweep(args.name, args.overrides, args.config_dir))
        return 0
    if args.join:
        outcome = sweep.join_study(args.name, args.overrides, args.config_dir, args.device, args.threads, args.index)
        print(
            f"driver {os.getpid()}: ran trials {outcome.trials_run}"
            + (f"; {outcome.stopped_reason}" if outcome.stopped_reason else "")
        )
        return 0
    if args.workers < 1:
        raise SystemExit("error: --workers must be >= 1")
    from qtts_sweep.sweep import slurm

    if slurm.launcher_kind(args.name, args.overrides, args.config_dir) == "slurm":
        slurm.submit(args.name, args.overrides, args.workers, args.config_dir)
        return 0
    return sweep.launch(args.name, args.overrides, args.config_dir, args.workers, args.devices)


def _cmd_tracking_server(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from qtts_sweep.config.loader import load_config
    from qtts_sweep.tracking.server import serve

    cfg = load_config(args.overrides, args.config_dir)
    sqlite = cfg.tracking.tracking_uri if cfg.tracking.tracking_uri.startswith("sqlite:") else None
    backend = (
        args.backend_store_uri
        or os.environ.get("MLFLOW_BACKEND_STORE_URI")
        or sqlite
        or f"sqlite:///{Path(cfg.paths.runs_dir) / 'mlflow.db'}"
    )
    artifacts = args.artifact_root or cfg.tracking.artifact_location
    return serve(backend, artifacts, args.host, args.port, args.allowed_hosts, args.workers)


def _cmd_report(args: argparse.Namespace) -> int:
    from qtts_sweep.config.loader import load_config
    from qtts_sweep.sweep.report import report_command
    from qtts_sweep.sweep.storage import default_storage_for

    cfg = load_config(args.overrides, args.config_dir, check_model=False)
    print(report_command(args.study, args.storage or default_storage_for(args.study, cfg.paths.runs_dir), args.top))
    return 0


def _cmd_listen(args: argparse.Namespace) -> int:
    from qtts_sweep.config.loader import load_config
    from qtts_sweep.sweep.listen import serve
    from qtts_sweep.sweep.storage import default_storage_for

    cfg = load_config(args.overrides, args.config_dir, check_model=False)
    storage = args.storage or default_storage_for(args.study, cfg.paths.runs_dir)
    serve(cfg, args.study, storage, args.host, args.port, args.pairs, args.listener or "")
    return 0


def _cmd_gc(args: argparse.Namespace) -> int:
    from qtts_sweep.config.loader import load_config
    from qtts_sweep.production.gc import collect_garbage, format_gc
    from qtts_sweep.sweep.storage import default_storages, open_existing_storage

    cfg = load_config(args.overrides, args.config_dir, check_model=False)
    if args.storage:  # a wrong URL would open an empty storage that protects no checkpoint
        open_existing_storage(args.storage)
    storages = [args.storage] if args.storage else default_storages(cfg.paths.runs_dir)
    result = collect_garbage(cfg, storages, args.keep_top, args.dry_run)
    print(format_gc(result, args.dry_run))
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from qtts_sweep.tools import bench

    if args.what == "prep":
        bench.bench_prep(args.overrides)
    elif args.what == "synth":
        bench.bench_synth()
    elif args.what == "sweep":
        bench.bench_sweep(n_trials=args.trials, overrides=args.overrides)
    elif args.what == "workers":
        bench.bench_workers(args.overrides)
    elif args.what == "search":
        from qtts_sweep.tools.bench_search import bench_search

        bench_search(seeds=args.seeds, real=args.real, overrides=args.overrides)
    elif args.what == "train":
        bench.bench_train(shape=args.shape, device=args.device, batch_sizes=tuple(args.batch_sizes), steps=args.steps)
    return 0


def _cmd_dry_run(args: argparse.Namespace) -> int:
    from qtts_sweep.config.loader import load_config
    from qtts_sweep.tools.dry_run import run_dry_run
    from qtts_sweep.tools.dry_run_report import format_report

    cfg = load_config(args.overrides, args.config_dir)
    report = run_dry_run(cfg, n_lines=args.lines, steps=args.steps, frames=args.frames, keep=args.keep)
    print(format_report(report))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from qtts_sweep.config.loader import load_config
    from qtts_sweep.tools.demo import run_demo

    overrides = ["experiment=tiny_demo", *args.overrides]
    run_demo(load_config(overrides, args.config_dir), list(args.overrides))
    return 0


# Declarations only (one block per subcommand), hence long; every subcommand body is a few lines above.
def build_parser() -> argparse.ArgumentParser:
    from qtts_sweep.model.tiny import shape_names  # reads a folder listing; imports no torch

    parser = argparse.ArgumentParser(
        prog="qtts-sweep",
        description="Honest hyperparameter sweeps for LoRA fine-tuning of Qwen3-TTS.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help=VERBOSE_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("check", help="compose and validate the config; print the resolved result")
    _add_config_args(p)
    p.set_defaults(func=_cmd_check)

    p = sub.add_parser("make-tiny-model", help="write the tiny preset model folder (random weights)")
    p.add_argument("--seed", type=int, default=0, help="weights seed (same seed -> byte-identical folder)")
    p.add_argument("--out", help="output folder (default: model.source of model=tiny, under runs/models/)")
    _add_config_args(p)
    p.set_defaults(func=_cmd_make_tiny_model)

    p = sub.add_parser(
        "prepare", help="validate a dataset (all problems at once), resample to 24 kHz, split, cache codec codes"
    )
    _add_config_args(p)
    p.set_defaults(func=_cmd_prepare)

    p = sub.add_parser(
        "train", help="train LoRA to train.epochs, reusing stored epochs and resuming from the latest one"
    )
    _add_config_args(p)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser(
        "synth", help="synthesize held-out lines (scored, cached) or given text from checkpoint + LoRA scale"
    )
    p.add_argument("--text", action="append", help="a line to speak (repeatable); commas and quotes are safe")
    p.add_argument("--text-file", help="a UTF-8 file with one line to speak per line")
    p.add_argument("--base", action="store_true", help="the base model (no adapter), same speaker embedding")
    p.add_argument("--out", help="folder for --text output (default runs/synth/)")
    p.add_argument(
        "--production",
        metavar="BUNDLE",
        help="synthesize from a promoted bundle (runs/production/<name>/production.yaml or "
        "models:/qtts-<name>@production)",
    )
    _add_config_args(p)
    p.set_defaults(func=_cmd_synth)

    p = sub.add_parser("sweep", help="run an Optuna sweep over lr x epoch x lora_scale as a Hydra multirun")
    p.add_argument("name", help="a sweep in sweeps/ (default, grid, scale_only, tiny) or a path to a sweep YAML")
    p.add_argument("--plan", action="store_true", help="print training keys, epochs and disk, run nothing")
    p.add_argument("--workers", type=int, default=1, help="driver processes on one study (one per device)")
    p.add_argument("--devices", help="devices for --workers in turn, e.g. 0,1,3 (default: every GPU, else CPU)")
    p.add_argument("--storage", help="Optuna storage URL (overrides the sweep file's; default: a file under runs/)")
    p.add_argument("--join", action="store_true", help="run one driver on a study prepared by a launcher")
    p.add_argument("--device", help="--join: the device of this driver (e.g. cuda:1)")
    p.add_argument("--threads", type=int, help="--join: CPU threads of this driver's model worker")
    p.add_argument("--index", type=int, default=0, help="--join: this driver's number (offsets the sampler seed)")
    _add_config_args(p)
    p.set_defaults(func=_cmd_sweep)

    p = sub.add_parser(
        "tracking-server", help="run an MLflow server for many workers (loopback unless --host); prints the URI to use"
    )
    p.add_argument(
        "--backend-store-uri",
        help="e.g. postgresql+psycopg://USER@HOST/DB with the password in ~/.pgpass (also MLFLOW_BACKEND_STORE_URI); "
        "default: the SQLite store of tracking.tracking_uri",
    )
    p.add_argument("--artifact-root", help="artifact folder (default: tracking.artifact_location)")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="interface to bind (default 127.0.0.1; anything else exposes an unauthenticated server)",
    )
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--allowed-hosts", help="Host headers to accept (default: the address served)")
    p.add_argument("--workers", type=int, default=1, help="server processes (more for many concurrent writers)")
    _add_config_args(p)
    p.set_defaults(func=_cmd_tracking_server)

    p = sub.add_parser("report", help="print a study's top trials (and failures) from its Optuna storage")
    p.add_argument("study", help="the study name (the sweep file's study_name)")
    p.add_argument("--storage", help="Optuna storage URL (default: sqlite under runs/)")
    p.add_argument("--top", type=int, default=10)
    _add_config_args(p)
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("promote", help="turn a study's best (or --trial N) trial into a production bundle")
    p.add_argument("study", help="the study name")
    p.add_argument("--trial", type=int, help="promote this trial number instead of the best")
    p.add_argument("--name", help="bundle/model name (default: the study name)")
    p.add_argument("--storage", help="Optuna storage URL (default: sqlite under runs/)")
    p.add_argument(
        "--stress",
        type=int,
        metavar="N",
        help="production gate: speak N unseen lines first (default production.stress.lines; 0: no gate)",
    )
    p.add_argument("--text-file", help="the gate's lines, one per line (default data/stress/lines.txt)")
    _add_config_args(p)
    p.set_defaults(func=_cmd_promote)

    p = sub.add_parser("listen", help="serve a blind A/B listening page for a study's top pairs (127.0.0.1)")
    p.add_argument("study", help="the study name")
    p.add_argument("--storage", help="Optuna storage URL (default: sqlite under runs/)")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8765, help="port (0: any free one)")
    p.add_argument("--pairs", type=int, default=4, help="top distinct (checkpoint, scale) pairs to compare")
    p.add_argument("--listener", help="your name, stored with each judgement")
    _add_config_args(p)
    p.set_defaults(func=_cmd_listen)

    p = sub.add_parser("export", help="merge a bundle's adapter into a standalone custom-voice model folder")
    p.add_argument("bundle", help="bundle folder / production.yaml, or models:/qtts-<name>@production")
    p.add_argument("--out", required=True, help="output model folder")
    p.add_argument("--speaker", help="speaker name in the exported model (default: the bundle's)")
    _add_config_args(p)
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("gc", help="remove checkpoints that no top trial or promotion needs; print what it freed")
    p.add_argument("--keep-top", type=int, default=3, help="keep the checkpoints of each study's top K trials")
    p.add_argument("--storage", help="Optuna storage URL (default: sqlite under runs/)")
    p.add_argument("--dry-run", action="store_true", help="list what would be removed, remove nothing")
    _add_config_args(p)
    p.set_defaults(func=_cmd_gc)

    p = sub.add_parser("bench", help="benchmarks that print side-by-side ratios (last line `ratio: x`)")
    p.add_argument(
        "what",
        choices=["prep", "train", "synth", "sweep", "workers", "search"],
        help="prep: first vs cached `qtts-sweep prepare`; train: our step vs upstream double shift; "
        "synth: batched vs one-by-one; sweep: reuse vs retrain-per-trial; workers: 2 drivers vs 1; "
        "search: SIMULATED grid / retrain TPE / ours / ours multi-fidelity + warm start (cost to the winner)",
    )
    p.add_argument(
        "--shape", default="mid", choices=["tiny", *shape_names()], help="train: random model shape (model/shapes/)"
    )
    p.add_argument("--device", default="cpu", help="train: cpu or cuda[:N]")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[2], help="train: batch sizes to measure")
    p.add_argument("--steps", type=int, default=30, help="train: measured steps per variant")
    p.add_argument("--trials", type=int, default=24, help="sweep: trials of the reuse sweep")
    p.add_argument("--seeds", type=int, default=20, help="search: simulated landscapes (seeds)")
    p.add_argument("--real", action="store_true", help="search: also (c) vs (d) for real on the tiny preset")
    p.add_argument("overrides", nargs="*", help="Hydra overrides passed to the benchmarked command")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser(
        "dry-run",
        help="the whole path at the real model size with random weights on a few lines; prints a GPU memory plan",
    )
    p.add_argument("--lines", type=int, default=4, help="demo lines to run (the longest + the shortest others)")
    p.add_argument("--steps", type=int, default=2, help="training steps of the one epoch")
    p.add_argument("--frames", type=int, default=8, help="frames synthesized per line (a random model never stops)")
    p.add_argument("--keep", metavar="DIR", help="write the run (data, checkpoint, bundle, export) here and keep it")
    _add_config_args(p)
    p.set_defaults(func=_cmd_dry_run)

    p = sub.add_parser("demo", help="the whole workflow on the tiny preset: prepare, sweep, promote, synthesize")
    _add_config_args(p)
    p.set_defaults(func=_cmd_demo)

    for p in sub.choices.values():  # -v anywhere; SUPPRESS keeps a subcommand from resetting a leading -v
        p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=VERBOSE_HELP)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # Overrides may come after options (`synth --text "Hi" train.lr=1e-4`): argparse leaves those over.
    unknown = [a for a in extra if a.startswith("-") or not hasattr(args, "overrides")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    if args.verbose:
        quiet.set_verbose(True)
    quiet.setup()
    from qtts_sweep.util.problems import ValidationError

    try:
        return args.func(args)
    except ValidationError as exc:
        log.error(str(exc))
        return 2
    except (OSError, ValueError) as exc:  # the hub raises both; transformers wraps them in OSError
        from qtts_sweep.config.model_source import hub_error, hub_error_message

        hub = hub_error(exc)
        if hub is None:
            raise
        log.error(hub_error_message(hub).removeprefix("error: "))
        return 2


if __name__ == "__main__":
    sys.exit(main())
