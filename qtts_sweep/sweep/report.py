"""End-of-sweep report: top-trials table, plots and a listening page, logged to the study's parent MLflow run.

`qtts-sweep report <study>` prints the table again from the Optuna storage alone.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

from qtts_sweep.config.schema import Config
from qtts_sweep.metrics.catalog import REGISTRY
from qtts_sweep.sweep import selection
from qtts_sweep.sweep.recovery import requeued
from qtts_sweep.sweep.storage import load_existing_study


def _row(t, retried: set[int]) -> dict[str, Any]:
    return {
        "number": t.number,
        "state": t.state.name + (" (re-queued)" if t.number in retried else ""),
        "value": t.values[0] if t.values and len(t.values) == 1 else t.values,
        "params": t.params,
        "summary": t.user_attrs.get("summary", {}),
        "reused": t.user_attrs.get("reused"),
        "fail_reason": t.user_attrs.get("fail_reason"),
        "checkpoint": t.user_attrs.get("checkpoint"),
        "eval_dir": t.user_attrs.get("eval_dir"),
        "mlflow_run_id": t.user_attrs.get("mlflow_run_id"),
    }


def trial_rows(study) -> list[dict[str, Any]]:
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    retried = requeued(trials)
    return [_row(t, retried) for t in trials if t.state != TrialState.WAITING]


def top_trials(study, k: int) -> list[dict[str, Any]]:
    """Rows of the k best completed trials (`selection.top_trials`), best first."""
    retried = requeued(study.get_trials(deepcopy=False))
    return [_row(t, retried) for t in selection.top_trials(study, k)]


def format_table(study, k: int = 10) -> str:
    rows = trial_rows(study)
    top = top_trials(study, k)
    names = sorted({p for r in rows for p in r["params"]})
    columns = REGISTRY.table_keys()  # the metrics declared `table=True`, in registry order
    head = ["#", "objective"] + [n.split(".")[-1] for n in names] + columns + ["reused"]
    lines = [
        f"study `{study.study_name}`: {len(rows)} trials "
        f"({sum(r['state'] == 'COMPLETE' for r in rows)} complete, "
        f"{sum(r['state'] == 'PRUNED' for r in rows)} pruned, "
        f"{sum(r['state'].startswith('FAIL') for r in rows)} failed); top {len(top)}:"
    ]
    widths = [max(len(h), 9) for h in head]
    lines.append("  ".join(h.rjust(w) for h, w in zip(head, widths, strict=True)))
    for r in top:
        cells = [str(r["number"]), f"{r['value']:.4f}"]
        cells += [_fmt(r["params"].get(n)) for n in names]
        cells += [_fmt(r["summary"].get(m)) for m in columns]
        cells += [str(bool(r["reused"]))]
        lines.append("  ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True)))
    failed = [r for r in rows if r["state"].startswith("FAIL") and r["fail_reason"]]
    for r in failed[:10]:
        lines.append(f"  trial {r['number']} failed: {r['fail_reason']}")
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def plots(study, out: Path) -> list[Path]:
    """objective over epoch x scale per lr, optimization history, parameter importances (when computable)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    top = [r for r in trial_rows(study) if r["state"] == "COMPLETE" and isinstance(r["value"], float)]
    lrs = sorted({r["params"].get("train.lr") for r in top}, key=lambda v: (v is None, v))
    if top:
        fig, axes = plt.subplots(1, max(len(lrs), 1), figsize=(4 * max(len(lrs), 1), 3.5), squeeze=False)
        for ax, lr in zip(axes[0], lrs, strict=False):
            pts = [r for r in top if r["params"].get("train.lr") == lr]
            sc = ax.scatter(
                [r["params"].get("eval.epoch", 0) for r in pts],
                [r["params"].get("eval.lora_scale", 0) for r in pts],
                c=[r["value"] for r in pts],
                cmap="viridis",
                s=80,
            )
            ax.set(title=f"lr {lr}", xlabel="epoch", ylabel="lora_scale")
            fig.colorbar(sc, ax=ax, label="objective")
        fig.tight_layout()
        made.append(out / "objective_epoch_scale.png")
        fig.savefig(made[-1], dpi=90)
        plt.close(fig)
    from optuna.visualization import matplotlib as ovm

    for name, fn in (
        ("optimization_history.png", ovm.plot_optimization_history),
        ("param_importances.png", ovm.plot_param_importances),
    ):
        try:
            ax = fn(study)
            fig = ax.figure if hasattr(ax, "figure") else ax[0].figure
            fig.tight_layout()
            fig.savefig(out / name, dpi=90)
            plt.close(fig)
            made.append(out / name)
        except Exception as exc:  # e.g. importances need >= 2 completed trials with varying params
            (out / f"{name}.txt").write_text(f"not plotted: {exc}\n")
    return made


def _audio_tag(path: Path | str | None) -> str:
    if not path or not Path(path).is_file():
        return "<em>-</em>"
    import soundfile as sf

    wav, sr = sf.read(str(path), dtype="float32")
    buf = io.BytesIO()
    sf.write(buf, wav, sr, format="WAV", subtype="PCM_16")
    data = base64.b64encode(buf.getvalue()).decode()
    return f'<audio controls preload="none" src="data:audio/wav;base64,{data}"></audio>'


def listening_page(study, top: list[dict], base_eval_dir: str | None, lines: list[dict], out: Path) -> Path:
    """HTML: held-out lines x (ground truth, base model, top trials), audio embedded so it is self-contained."""
    cols = ["ground truth", "base model"] + [
        f"trial {r['number']}<br><small>lr {r['params'].get('train.lr')}, epoch {r['params'].get('eval.epoch')}, "
        f"scale {r['params'].get('eval.lora_scale')}<br>objective {r['value']:.3f}</small>"
        for r in top
    ]
    parts = [
        f"<html><head><meta charset='utf-8'><title>{html.escape(study.study_name)}</title>",
        "<style>td,th{border:1px solid #ccc;padding:4px;vertical-align:top}</style></head><body>",
        f"<h2>Study {html.escape(study.study_name)}: held-out lines</h2>",
        "<p>Every cell was synthesized with the trial's own decoding settings and seeds.</p>",
        "<table><tr><th>line</th>" + "".join(f"<th>{c}</th>" for c in cols) + "</tr>",
    ]
    for line in lines:
        cells = [
            _audio_tag(line.get("audio")),
            _audio_tag(Path(base_eval_dir) / "wavs" / f"{line['id']}_s0.wav" if base_eval_dir else None),
        ]
        cells += [
            _audio_tag(Path(r["eval_dir"]) / "wavs" / f"{line['id']}_s0.wav" if r.get("eval_dir") else None)
            for r in top
        ]
        parts.append(f"<tr><td>{html.escape(line['text'])}</td>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    parts.append("</table></body></html>")
    path = out / "listening.html"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def training_summary(study) -> dict[str, int]:
    """Epochs trained across all trials vs the lower bound (each training key trained once up to the highest
    epoch any trial needed), and (key, epoch) pairs trained more than once (0 when reuse and leases work)."""
    trained: dict[tuple[str, int], int] = {}
    needed: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        key = t.user_attrs.get("training_key")
        if not key:
            continue
        for e in t.user_attrs.get("trained_epochs", []):
            trained[(key, e)] = trained.get((key, e), 0) + 1
        needed[key] = max(needed.get(key, 0), int(t.user_attrs.get("epoch_reached", 0)))
    return {
        "epochs_trained": sum(trained.values()),
        "lower_bound": sum(needed.values()),
        "training_keys": len(needed),
        "trained_twice": sum(n - 1 for n in trained.values() if n > 1),
    }


def format_training_summary(s: dict[str, int]) -> str:
    return (
        f"epochs trained: {s['epochs_trained']} (lower bound {s['lower_bound']}: {s['training_keys']} training keys x "
        f"the highest epoch a trial needed); (key, epoch) trained twice: {s['trained_twice']}"
    )


def finish_sweep(spec: Any, storage: str, parent_run_id: str | None, cfg: Config, base_eval_dir: str | None) -> str:
    """Write and log the report; print and return the summary table."""
    from qtts_sweep.tracking.mlflow_tracker import make_tracker

    study = load_existing_study(spec.study_name, storage)
    out = Path(cfg.paths.runs_dir) / "sweeps" / spec.study_name / "report"
    out.mkdir(parents=True, exist_ok=True)
    table = format_table(study, spec.top_k) + "\n" + format_training_summary(training_summary(study))
    (out / "top_trials.txt").write_text(table + "\n")
    top = top_trials(study, spec.top_k)
    (out / "top_trials.json").write_text(json.dumps(top, indent=2, default=str) + "\n")
    if not spec.multi:
        plots(study, out)
    lines = []
    if top and top[0].get("eval_dir"):
        result = json.loads((Path(top[0]["eval_dir"]) / "result.json").read_text())
        from qtts_sweep.data.prepare import prepare_dataset

        ds = prepare_dataset(cfg, progress=False)
        audio = {r.id: r.audio for rows in ds.splits.values() for r in rows}
        seen = []
        for row in result["per_line"]:
            if row["id"] not in seen:
                seen.append(row["id"])
                lines.append({"id": row["id"], "text": row["text"], "audio": audio.get(row["id"])})
        listening_page(study, top, base_eval_dir, lines, out)
    make_tracker(cfg.tracking).log_parent_artifacts(parent_run_id, out)
    print(table)
    return table


def report_command(study_name: str, storage: str, top_k: int = 10) -> str:
    return format_table(load_existing_study(study_name, storage), top_k)
