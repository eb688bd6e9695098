"""Promotion: a sweep's chosen (checkpoint, scale) -> a self-contained production bundle, an MLflow model version
with the `production` alias, a test-split report, and (optionally) a merged standalone custom-voice model folder.

The bundle (`runs/production/<name>/`) holds `production.yaml`, `adapter.safetensors` and
`speaker_embedding.safetensors`: no paths into `runs/store`, movable to another machine. `production.yaml` records
everything synthesis needs to sound exactly like the trial did (base model + content hash, LoRA r/alpha/targets,
scale, decoding, seed, batch size) and where it came from (study, trial, MLflow run, val and test metrics).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qtts_sweep.config.schema import (
    Config,
    DecodingConfig,
    LoraConfig,
    Problem,
    ValidationError,
)

BUNDLE_FILE = "production.yaml"
BUNDLE_VERSION = 1
SPEAKER_NAME = "target"


class BundleError(ValidationError):
    def __init__(self, problems: list[Problem], source: str = "production bundle"):
        super().__init__(problems, source)


@dataclass
class Bundle:
    """A loaded, validated production.yaml (paths resolved against its folder)."""

    dir: Path
    base_model: str
    base_model_identity: str
    base_tiny: bool
    lora: LoraConfig
    lora_scale: float
    speaker: str
    seed: int
    batch_size: int
    decoding: DecodingConfig
    origin: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def adapter(self) -> Path:
        return self.dir / "adapter.safetensors"

    @property
    def speaker_embedding(self) -> Path:
        return self.dir / "speaker_embedding.safetensors"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_bundle(path: str | os.PathLike, check_model: bool = True) -> Bundle:
    """Validate a bundle before any model loads: fields, files, base-model hash. Every problem at once."""
    import yaml

    from qtts_sweep.train.store import model_identity

    p = Path(path)
    folder = p.parent if p.suffix in (".yaml", ".yml") else p
    f = folder / BUNDLE_FILE
    if not f.is_file():
        raise BundleError([Problem(str(f), None, "does not exist", "pass runs/production/<name>/production.yaml")])
    raw = yaml.safe_load(f.read_text()) or {}
    problems: list[Problem] = []

    def need(key: str, kind: type | tuple) -> Any:
        cur: Any = raw
        for part in key.split("."):
            cur = cur.get(part) if isinstance(cur, dict) else None
        if cur is None or not isinstance(cur, kind) or isinstance(cur, bool) and kind in (int, float, (int, float)):
            problems.append(
                Problem(
                    f"{f}: {key}",
                    cur,
                    f"is required and must be {getattr(kind, '__name__', kind)}",
                    "re-run `qtts-sweep promote` to rewrite the bundle",
                )
            )
        return cur

    base = need("base_model.source", str)
    ident = need("base_model.identity", str)
    scale = need("lora_scale", (int, float))
    r = need("lora.r", int)
    alpha = need("lora.alpha", (int, float))
    targets = need("lora.target_modules", list)
    scope = need("lora.scope", str)
    seed = need("decoding.seed", int)
    batch = need("batch_size", int)
    lora = dec = None
    if not problems:
        try:
            lora = LoraConfig(r=r, alpha=float(alpha), dropout=0.0, target_modules=list(targets), scope=scope)
            dec = DecodingConfig(**raw["decoding"])
        except (ValidationError, TypeError) as exc:
            problems += getattr(exc, "problems", [Problem(str(f), raw.get("decoding"), str(exc), "fix the field")])
        if not 0 <= scale <= 2:
            problems.append(Problem(f"{f}: lora_scale", scale, "must be in [0, 2]", "e.g. 0.3"))
        if batch < 1:
            problems.append(Problem(f"{f}: batch_size", batch, "must be >= 1", "the trial's eval.batch_size"))
    for name in ("adapter.safetensors", "speaker_embedding.safetensors"):
        if not (folder / name).is_file():
            problems.append(
                Problem(
                    str(folder / name),
                    None,
                    "is missing from the bundle",
                    "copy the whole bundle folder, or re-run `qtts-sweep promote`",
                )
            )
        elif raw.get("files", {}).get(name) and raw["files"][name] != _sha(folder / name):
            problems.append(
                Problem(
                    str(folder / name),
                    None,
                    "does not match the sha256 recorded in production.yaml",
                    "the file was modified or replaced: re-run `qtts-sweep promote`",
                )
            )
    if check_model and isinstance(base, str) and isinstance(ident, str) and Path(base).is_dir():
        actual = model_identity(base)
        if actual != ident:
            problems.append(
                Problem(
                    f"{f}: base_model.identity",
                    ident,
                    f"the folder {base} now hashes to {actual}",
                    "point base_model.source at the exact base model the adapter was trained on",
                )
            )
    if problems:
        raise BundleError(problems)
    return Bundle(
        folder,
        base,
        ident,
        bool(raw.get("base_model", {}).get("tiny", False)),
        lora,
        float(scale),
        raw.get("speaker", SPEAKER_NAME),
        seed,
        batch,
        dec,
        raw.get("origin", {}),
        raw.get("metrics", {}),
    )


def select_trial(study, trial_number: int | None, multi: bool, objectives: list[str] | None = None):
    """The trial to promote. Single objective: the best COMPLETE trial. Multi-objective: among the Pareto front
    (of the feasible trials when the sweep has constraints; of all completed ones when none is feasible), the
    trial with the best first objective (ties: the lowest trial number). A chosen trial that did not complete
    is refused."""
    from optuna.trial import TrialState

    if trial_number is not None:
        matches = [t for t in study.get_trials(deepcopy=False) if t.number == trial_number]
        if not matches:
            raise BundleError(
                [
                    Problem(
                        "trial",
                        trial_number,
                        f"no such trial in study `{study.study_name}`",
                        "see `qtts-sweep report <study>` for trial numbers",
                    )
                ],
                "promotion",
            )
        t = matches[0]
        if t.state != TrialState.COMPLETE:
            why = t.user_attrs.get("fail_reason", "")
            raise BundleError(
                [
                    Problem(
                        "trial",
                        trial_number,
                        f"is {t.state.name}{': ' + why if why else ''}; only COMPLETE trials can be promoted",
                        "pick a completed trial",
                    )
                ],
                "promotion",
            )
        return t
    done = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if not done:
        raise BundleError(
            [Problem("study", study.study_name, "has no COMPLETE trial", "run or resume the sweep")], "promotion"
        )
    if multi:
        front = study.best_trials or done
        sign = 1 if study.directions[0].name == "MAXIMIZE" else -1
        return sorted(front, key=lambda t: (-sign * t.values[0], t.number))[0]
    return max(done, key=lambda t: (t.value, -t.number))


def _write_bundle(out: Path, payload: dict, adapter: Path, spk: Path) -> None:
    import yaml

    from qtts_sweep.util.fsio import atomic_folder

    with atomic_folder(out) as tmp:
        shutil.copy2(adapter, tmp / "adapter.safetensors")
        shutil.copy2(spk, tmp / "speaker_embedding.safetensors")
        payload["files"] = {n: _sha(tmp / n) for n in ("adapter.safetensors", "speaker_embedding.safetensors")}
        (tmp / BUNDLE_FILE).write_text(yaml.safe_dump(payload, sort_keys=False))


@dataclass
class PromotionResult:
    bundle: Path
    trial: int
    changed: bool
    test_metrics: dict[str, float]
    model_version: str | None = None


def promote(
    cfg: Config,
    study_name: str,
    storage: str,
    trial_number: int | None = None,
    name: str | None = None,
    multi: bool = False,
) -> PromotionResult:
    """Select, bundle, score on the test split, register. Promoting the same trial again changes nothing."""
    import optuna

    from qtts_sweep.model import modeling
    from qtts_sweep.sweep.driver import _redact, make_storage
    from qtts_sweep.train.store import model_identity

    study = optuna.load_study(study_name=study_name, storage=make_storage(storage))
    multi = multi or len(study.directions) > 1
    trial = select_trial(study, trial_number, multi)
    name = name or study_name
    out = Path(cfg.paths.production_dir) / name
    ckpt = Path(trial.user_attrs["checkpoint"])
    existing = None
    if (out / BUNDLE_FILE).is_file():
        try:
            existing = load_bundle(out, check_model=False)
        except BundleError:
            existing = None
    same = (
        existing is not None
        and existing.origin.get("study") == study_name
        and existing.origin.get("trial") == trial.number
        and (out / "adapter.safetensors").is_file()
        and _sha(out / "adapter.safetensors") == _sha(ckpt / "adapter.safetensors")
    )
    if same:
        return PromotionResult(
            out, trial.number, False, existing.metrics.get("test", {}), existing.origin.get("model_version")
        )
    trial_cfg = trial_config(cfg, ckpt, trial)
    test = score_on_test(trial_cfg, ckpt)
    source = modeling.ensure_model_folder(trial_cfg.model)
    payload = {
        "version": BUNDLE_VERSION,
        "base_model": {"source": source, "identity": model_identity(source), "tiny": trial_cfg.model.tiny},
        "lora": {
            "r": trial_cfg.lora.r,
            "alpha": trial_cfg.lora.alpha,
            "target_modules": trial_cfg.lora.target_modules,
            "scope": trial_cfg.lora.scope,
        },
        "lora_scale": float(trial_cfg.eval.lora_scale),
        "speaker": SPEAKER_NAME,
        "batch_size": trial_cfg.eval.batch_size,
        "decoding": dataclasses.asdict(trial_cfg.eval.decoding),
        "origin": {
            "study": study_name,
            "trial": trial.number,
            "storage": _redact(storage),
            "mlflow_run_id": trial.user_attrs.get("mlflow_run_id"),
            "training_key": trial.user_attrs.get("training_key"),
            "epoch": trial_cfg.eval.epoch,
            "params": trial.params,
        },
        "metrics": {
            "objective_val": trial.value if not multi else trial.values,
            "val": trial.user_attrs.get("summary", {}),
            "test": test,
        },
    }
    _write_bundle(out, payload, ckpt / "adapter.safetensors", ckpt / "speaker_embedding.safetensors")
    from qtts_sweep.tracking.mlflow_tracker import make_tracker

    version = make_tracker(cfg.tracking).register_bundle(
        f"qtts-{name}", out, trial.user_attrs.get("mlflow_run_id"), {"study": study_name, "trial": str(trial.number)}
    )
    if version is not None:
        payload["origin"]["model_version"] = version
        import yaml

        (out / BUNDLE_FILE).write_text(yaml.safe_dump(payload, sort_keys=False))
    return PromotionResult(out, trial.number, True, test, version)


def trial_config(cfg: Config, ckpt: Path, trial) -> Config:
    """The trial's config: the checkpoint's saved config, the trial's eval params, today's paths and tracking."""
    from omegaconf import OmegaConf

    saved = OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.load(ckpt / "config.yaml"))
    tcfg: Config = OmegaConf.to_object(saved)
    epoch = int(trial.params.get("eval.epoch", tcfg.eval.epoch))
    scale = round(float(trial.params.get("eval.lora_scale", tcfg.eval.lora_scale)), 10)  # as the sweep ran it
    return dataclasses.replace(
        tcfg,
        paths=cfg.paths,
        tracking=cfg.tracking,
        train=dataclasses.replace(tcfg.train, epochs=epoch),
        eval=dataclasses.replace(tcfg.eval, epoch=epoch, lora_scale=scale),
    )


def score_on_test(cfg: Config, ckpt: Path) -> dict[str, float]:
    """The promoted pair on the held-out test split (never used for selection); cached like any evaluation."""
    from qtts_sweep.evaluate.scoring import MetricSuite, evaluate, held_out_lines
    from qtts_sweep.evaluate.synth import Synthesizer
    from qtts_sweep.model import modeling
    from qtts_sweep.train.loop import resolve_run

    test_cfg = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, split="test"))
    run = resolve_run(test_cfg)
    synth = Synthesizer(test_cfg)
    suite = MetricSuite(test_cfg, synth)
    lines = held_out_lines(run.dataset, "test", test_cfg.eval.max_lines)
    ref = modeling.load_audio_24k(run.dataset.ref_audio)
    ev = evaluate(test_cfg, synth, suite, lines, ref, run.key, cfg.eval.epoch, cfg.eval.lora_scale, ckpt)
    return {"objective": ev.objective, **{k: v for k, v in ev.summary.items() if not k.endswith("_std")}}


def bundle_config(cfg: Config, bundle: Bundle) -> Config:
    """A config that synthesizes exactly as the bundle says (base model, LoRA layout, scale, decoding, batch)."""
    model = dataclasses.replace(
        cfg.model,
        source=bundle.base_model,
        tiny=bundle.base_tiny,
        local_files_only=cfg.model.local_files_only or bundle.base_tiny,
    )
    ev = dataclasses.replace(
        cfg.eval, decoding=bundle.decoding, batch_size=bundle.batch_size, lora_scale=bundle.lora_scale
    )
    return dataclasses.replace(cfg, model=model, lora=bundle.lora, eval=ev)


def bundle_synthesizer(cfg: Config, bundle: Bundle):
    from qtts_sweep.evaluate.synth import Synthesizer

    synth = Synthesizer(bundle_config(cfg, bundle))
    synth.use(bundle.dir, bundle.lora_scale)  # adapter.safetensors + speaker_embedding.safetensors
    return synth


def resolve_bundle(cfg: Config, where: str, tmp: Path) -> Bundle:
    """A bundle from a folder / production.yaml path, or from the registry (`models:/<name>@production`)."""
    if where.startswith("models:/") or where.startswith("runs:/"):
        from qtts_sweep.tracking.mlflow_tracker import make_tracker

        where = str(make_tracker(cfg.tracking).download_bundle(where, tmp))
    return load_bundle(where)


def production_synth(cfg: Config, where: str, texts: list[str], out_dir: str | None = None) -> str:
    """`qtts-sweep synth --production <bundle|models:/name@production> --text ...`."""
    import soundfile as sf

    from qtts_sweep.evaluate.synth import Line

    if not texts:
        raise BundleError([Problem("--text", None, "nothing to say", 'pass --text "..." or --text-file')], "request")
    with tempfile.TemporaryDirectory(prefix="qtts-bundle-") as tmp:
        bundle = resolve_bundle(cfg, where, Path(tmp))
        synth = bundle_synthesizer(cfg, bundle)
        out = Path(out_dir or Path(cfg.paths.runs_dir) / "synth" / "production")
        out.mkdir(parents=True, exist_ok=True)
        lines = [Line(f"text{i:03d}", t) for i, t in enumerate(texts)]
        report = [
            f"{len(lines)} line(s) from bundle {bundle.dir} (study {bundle.origin.get('study')}, trial "
            f"{bundle.origin.get('trial')}, scale {bundle.lora_scale}):"
        ]
        for s in synth.generate(lines, bundle.decoding, bundle.batch_size):
            path = out / f"{s.line.id}.wav"
            sf.write(path, s.wav, 24000)
            report.append(f"  {path} ({len(s.wav) / 24000:.2f} s){'  [no EOS]' if s.hit_cap else ''}")
    return "\n".join(report)


def _unload_lora(model: Any) -> int:
    """Merge every LoRA layer at its current scale into its base layer and put the base layer back."""
    from qtts_sweep.model.lora import lora_layers

    names = {id(m): n for n, m in model.named_modules()}
    merged = 0
    for layer in lora_layers(model):
        layer.merge(safe_merge=True)
        parent_name, _, child = names[id(layer)].rpartition(".")
        setattr(model.get_submodule(parent_name), child, layer.get_base_layer())
        merged += 1
    return merged


def _base_folder(bundle: Bundle, local_files_only: bool) -> Path:
    if Path(bundle.base_model).is_dir():
        return Path(bundle.base_model)
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(bundle.base_model, local_files_only=local_files_only))


def export_merged(cfg: Config, where: str, out: str | os.PathLike, speaker: str | None = None) -> Path:
    """A standalone custom-voice model folder: adapter merged at the promoted scale, the speaker's embedding in a
    new codec-embedding row (`spk_id`, `spk_is_dialect`), no speaker encoder. Plain
    `Qwen3TTSModel.from_pretrained(folder).generate_custom_voice(..., speaker=<name>)` loads it: no peft, no
    qtts-sweep."""
    import torch

    out = Path(out)
    with tempfile.TemporaryDirectory(prefix="qtts-bundle-") as tmp:
        bundle = resolve_bundle(cfg, where, Path(tmp))
        synth = bundle_synthesizer(cfg, bundle)
        model = synth.model
        name = (speaker or bundle.speaker).lower()
        n = _unload_lora(model)
        tcfg = model.config.talker_config
        taken = set(vars(tcfg).get("codec_language_id", {}).values()) | {
            tcfg.codec_eos_token_id,
            tcfg.codec_bos_id,
            tcfg.codec_pad_id,
            tcfg.codec_think_id,
            tcfg.codec_nothink_id,
            tcfg.codec_think_bos_id,
            tcfg.codec_think_eos_id,
        }
        # Speaker rows live among the ids generation always suppresses (the top 1024), so never sampled as audio.
        spk_id = next(i for i in range(tcfg.vocab_size - 1, tcfg.vocab_size - 1024, -1) if i not in taken)
        with torch.no_grad():
            model.talker.get_input_embeddings().weight[spk_id] = synth.spk_embedding.to(model.dtype)
        model.speaker_encoder = None  # a custom-voice config builds none
        base = _base_folder(bundle, cfg.model.local_files_only)
        from qtts_sweep.util.fsio import atomic_folder

        with atomic_folder(out) as stage:
            for item in base.iterdir():
                if (
                    item.name.endswith(".safetensors")
                    or item.name.endswith(".bin")
                    or item.name == "config.json"
                    or item.name.endswith(".index.json")
                ):
                    continue
                dst = stage / item.name
                shutil.copytree(item, dst) if item.is_dir() else shutil.copy2(item, dst)
            # Not save_pretrained: its config diffing trips over the loaded sub-configs' `dtype` (transformers
            # 4.57); the full config dict and safetensors' shared-tensor-aware writer give the same folder layout.
            from safetensors.torch import save_model

            save_model(model, str(stage / "model.safetensors"), metadata={"format": "pt"})
            config = json.loads((base / "config.json").read_text())  # same architecture: edit only what changed
            config["tts_model_type"] = "custom_voice"
            config["talker_config"]["spk_id"] = {name: spk_id}
            config["talker_config"]["spk_is_dialect"] = {name: False}
            (stage / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
            from qtts_sweep.model.tiny import _normalize_json_files

            _normalize_json_files(stage)  # drop the empty speaker-encoder model_type that breaks reloading
            info = {"merged_lora_layers": n, "lora_scale": bundle.lora_scale, "speaker": name, "spk_id": spk_id}
            (stage / "qtts_export.json").write_text(json.dumps(info) + "\n")
    return out


def format_promotion(r: PromotionResult) -> str:
    if not r.changed:
        return f"trial {r.trial} is already the promoted bundle at {r.bundle}: nothing changed"
    lines = [f"promoted trial {r.trial} to {r.bundle}"]
    if r.model_version:
        lines.append(f"  MLflow model version {r.model_version} now has alias `production`")
    from qtts_sweep.sweep.report import TABLE_METRICS

    shown = [k for k in ("objective", *TABLE_METRICS) if k in r.test_metrics]
    lines.append("  test split (never used for selection): " + ", ".join(f"{k} {r.test_metrics[k]:.4g}" for k in shown))
    lines.append(f'  synthesize: qtts-sweep synth --production {r.bundle / BUNDLE_FILE} --text "Hello."')
    return "\n".join(lines)
