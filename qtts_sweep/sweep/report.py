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
from qtts_sweep.evaluate.scoring import CEILING_PREFIX
from qtts_sweep.metrics.catalog import REGISTRY
from qtts_sweep.metrics.paired import MIN_LINES, PairedDiff, Verdict
from qtts_sweep.sweep import preference, selection
from qtts_sweep.sweep.recovery import requeued
from qtts_sweep.sweep.result import StoredTrial
from qtts_sweep.sweep.spec import is_training_param
from qtts_sweep.sweep.storage import load_existing_study
from qtts_sweep.sweep.warm_start import ATTR as WARM_ATTR


def _row(t, retried: set[int]) -> dict[str, Any]:
    stored = StoredTrial.of(t)
    return {
        "number": t.number,
        "state": t.state.name + (" (re-queued)" if t.number in retried else ""),
        "value": t.values[0] if t.values and len(t.values) == 1 else t.values,
        "params": t.params,
        "summary": stored.summary,
        "reused": stored.reused,
        "fail_reason": stored.fail_reason,
        "checkpoint": stored.checkpoint_path,
        "eval_dir": str(stored.eval_dir) if stored.eval_dir else None,
        "mlflow_run_id": stored.mlflow_run_id,
        "lines": _lines(stored),
        "warm_start": t.user_attrs.get(WARM_ATTR),
    }


def _lines(t: StoredTrial) -> str:
    """Lines a trial was scored on: `used/total` under multi-fidelity (fidelity.py), else the lines scored."""
    used, total = t.lines_used, t.lines_total
    if used is None:
        return "-"
    return f"{used}/{total}" if total is not None and total != used else str(used)


def trial_rows(study) -> list[dict[str, Any]]:
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    retried = requeued(trials)
    return [_row(t, retried) for t in trials if t.state != TrialState.WAITING]


def top_trials(study, k: int) -> list[dict[str, Any]]:
    """Rows of the k best completed trials (`selection.top_trials`), best first."""
    retried = requeued(study.get_trials(deepcopy=False))
    return [_row(t, retried) for t in selection.top_trials(study, k)]


def shown_trials(study, k: int, pick: tuple[int, str] | None) -> list[dict[str, Any]]:
    """The top k rows, then the trial promote would pick when it is not among them (a tie-break may pick it)."""
    top = top_trials(study, k)
    if pick is not None and pick[0] not in {r["number"] for r in top}:
        trials = study.get_trials(deepcopy=False)
        top.append(_row(next(t for t in trials if t.number == pick[0]), requeued(trials)))
    return top


def format_table(study, k: int = 10) -> str:
    rows = trial_rows(study)
    pick = promotion_pick(study)
    top = shown_trials(study, k, pick)
    names = searched(study)
    columns = REGISTRY.table_keys()  # the metrics declared `table=True`, in registry order
    tallies = preference.tally(study)  # blind A/B judgements (qtts-sweep listen), shown beside the objective
    listened = ["listen W-L-T/n"] if tallies else []
    head = ["#", "objective"] + listened + names + columns + ["reused", "lines"]  # full dotted names: `lora.r`
    lines = [
        f"study `{study.study_name}`: {len(rows)} trials "
        f"({sum(r['state'] == 'COMPLETE' for r in rows)} complete, "
        f"{sum(r['state'] == 'PRUNED' for r in rows)} pruned, "
        f"{sum(r['state'].startswith('FAIL') for r in rows)} failed); top {min(len(top), k)}"
        + (
            " and the trial promote picks (*)"
            if pick and len(top) > k
            else " (* = the trial promote picks)"
            if pick
            else ""
        )
        + ":"
    ]
    widths = [max(len(h), 9) for h in head]
    lines.append("  ".join(h.rjust(w) for h, w in zip(head, widths, strict=True)))
    for r in top:
        mark = "*" if pick and r["number"] == pick[0] else ""
        cells = [f"{mark}{r['number']}", f"{r['value']:.4f}"]
        cells += [tallies.get(r["number"], preference.Tally()).short()] if tallies else []
        cells += [human(r["params"].get(n)) for n in names]
        cells += [human(r["summary"].get(m)) for m in columns]
        cells += [str(bool(r["reused"])), r["lines"]]
        row = "  ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True))
        lines.append(row + (f"  (warm start: {r['warm_start']})" if r["warm_start"] else ""))
    lines += ceiling_row(top, len(names) + len(listened), columns, widths)
    lines += preference.report_lines(tallies, [r["number"] for r in top])
    lines += lines_row(rows)
    if pick is not None:
        lines.append(f"  promote picks trial {pick[0]}: {pick[1]}")
    failed = [r for r in rows if r["state"].startswith("FAIL") and r["fail_reason"]]
    for r in failed[:10]:
        lines.append(f"  trial {r['number']} failed: {r['fail_reason']}")
    return "\n".join(lines)


def promotion_pick(study) -> tuple[int, str] | None:
    """(trial number, why) of the trial `qtts-sweep promote` would pick with the sweep's own objective; None for
    multi-objective studies and studies without a completed trial."""
    from qtts_sweep.config.schema import ObjectiveConfig

    if selection.is_multi(study) or not selection.top_trials(study, 1):
        return None
    trial, why = selection.select_for_promotion(study, ObjectiveConfig())
    return trial.number, why


def lines_row(rows: list[dict]) -> list[str]:
    """Under multi-fidelity (fidelity.py), every trial's lines as `#trial:used/total`, pruned ones included."""
    cut = [r for r in rows if r["lines"] != "-"]
    if not any("/" in r["lines"] for r in cut):
        return []
    cells = " ".join(f"#{r['number']}:{r['lines']}" for r in cut)
    return [f"lines scored per trial (fewer than all: stopped by the per-line pruner): {cells}"]


def ceiling_row(top: list[dict], n_params: int, columns: list[str], widths: list[int]) -> list[str]:
    """The codec ceiling as one more table row (the ground truth's own codec round trip: what no trial can beat
    on the quality terms); empty when the results carry no ceiling."""
    summary = next((r["summary"] for r in top if any(k.startswith(CEILING_PREFIX) for k in r["summary"])), None)
    if summary is None:
        return []
    cells = ["ceiling", "-"] + ["-"] * n_params + [human(summary.get(CEILING_PREFIX + m)) for m in columns] + ["-", "-"]
    return ["  ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True))]


def searched(study) -> list[str]:
    """The sweep's own search space: every parameter its trials were given, in the order the sweep suggests them."""
    names: dict[str, None] = {}
    for t in study.get_trials(deepcopy=False):
        names.update(dict.fromkeys(t.params))
    return list(names)


def plot_axes(names: list[str]) -> tuple[str | None, str | None, str | None]:
    """(x, y, panel) of the objective plot from the searched parameters: x = eval.epoch and y = eval.lora_scale
    when searched (the choices that need no retraining), the other axes filled with the first searched ones in
    order; one panel per value of the first remaining training parameter (e.g. train.lr, lora.r), if any. With one
    searched parameter, y is None and the plot shows the objective over x."""
    x = "eval.epoch" if "eval.epoch" in names else None
    y = "eval.lora_scale" if "eval.lora_scale" in names else None
    others = [n for n in names if n not in (x, y)]
    if x is None and others:
        x = others.pop(0)
    if y is None and others:
        y = others.pop(0)
    if x is None:
        x, y = y, None
    panel = next((n for n in others if is_training_param(n)), None)
    return x, y, panel


def _sort_key(v: Any) -> tuple:
    return (v is None, str(type(v)), v)


def objective_figure(study, spec: Any = None, marks: dict[int, str] | None = None):
    """The objective over the two plot axes, one panel per value of the panel parameter (`plot_axes`). Panels
    share one colour scale and, when `spec` is given, the search space's full axes; `marks` (`marked_trials`)
    are drawn over their points."""
    import matplotlib.pyplot as plt

    top = [r for r in trial_rows(study) if r["state"] == "COMPLETE" and isinstance(r["value"], float)]
    x, y, panel = plot_axes(searched(study))
    if not top or x is None:
        return None
    vmin, vmax = shared_color_range([r["value"] for r in top])
    limits = {name: axis_limits(spec, name) for name in (x, y) if name}
    values = sorted({r["params"].get(panel) for r in top}, key=_sort_key)
    fig, axes = plt.subplots(1, len(values), figsize=(4 * len(values) + 1, 3.5), squeeze=False)
    for ax, value in zip(axes[0], values, strict=True):
        pts = [r for r in top if r["params"].get(panel) == value]

        def coords(rows: list[dict]) -> tuple[list, list]:
            return [r["params"].get(x) for r in rows], [r["params"].get(y) if y else r["value"] for r in rows]

        sc = ax.scatter(*coords(pts), c=[r["value"] for r in pts], cmap="viridis", vmin=vmin, vmax=vmax, s=80)
        _mark(ax, pts, marks or {}, coords)
        ax.set(title=f"{panel} {human(value)}" if panel else "", xlabel=x, ylabel=y or "objective")
        for axis, name in (("x", x), ("y", y)):
            if name and limits.get(name):
                getattr(ax, f"set_{axis}lim")(limits[name])
    legend = {label: h for a in axes[0] for h, label in zip(*a.get_legend_handles_labels(), strict=True)}
    if legend:
        fig.legend(list(legend.values()), list(legend), loc="upper center", ncol=len(legend), fontsize=8)
    fig.subplots_adjust(top=0.8, bottom=0.17, wspace=0.35)  # room for the legend and the axis labels
    fig.colorbar(sc, ax=list(axes[0]), label="objective")  # one scale for every panel
    return fig


def human(v: Any) -> str:
    """A number as a person writes it: 0.6 not 0.6000000000000001, 2e-6 not 2e-06, 10 not 10.0."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return "-" if v is None else str(v)
    if isinstance(v, int) or float(v).is_integer() and abs(v) < 1e6:
        return str(int(v))
    if 1e-3 <= abs(v) < 1e4:
        return f"{v:.4g}"
    text = f"{v:.3g}"
    if "e" not in text:
        return text
    mantissa, exp = text.split("e")
    return f"{mantissa}e{int(exp)}"


def shared_color_range(values: list[float]) -> tuple[float, float]:
    """One (vmin, vmax) for every panel, so a colour means the same objective everywhere."""
    lo, hi = min(values), max(values)
    return (lo, hi) if hi > lo else (lo - 0.5, hi + 0.5)


def axis_limits(spec: Any, name: str) -> tuple[float, float] | None:
    """The search space's full numeric range of `name` (with a margin); None when unknown or not numeric."""
    p = getattr(spec, "space", {}).get(name) if spec is not None else None
    if p is None:
        return None
    values = [v for v in (p.values() or [p.low, p.high]) if isinstance(v, int | float) and not isinstance(v, bool)]
    if not values:
        return None
    lo, hi = float(min(values)), float(max(values))
    pad = 0.05 * (hi - lo) if hi > lo else 0.5
    return lo - pad, hi + pad


def marked_trials(study: Any, production_dir: str | Path | None) -> dict[int, str]:
    """{trial number: label} for the plot: the promoted trial (a bundle of this study exists) and enqueued
    baselines (the published defaults and other fixed points a sweep file enqueues), warm-start points of earlier
    studies (warm_start.py) marked as such."""
    import yaml

    marks = {t.number: "baseline" for t in study.get_trials(deepcopy=False) if t.user_attrs.get("baseline")}
    marks.update({t.number: "warm start" for t in study.get_trials(deepcopy=False) if WARM_ATTR in t.user_attrs})
    for f in sorted(Path(production_dir).glob("*/production.yaml")) if production_dir else []:
        origin = (yaml.safe_load(f.read_text()) or {}).get("origin", {})
        if origin.get("study") == study.study_name and origin.get("trial") is not None:
            marks[int(origin["trial"])] = "promoted"
    return marks


def _mark(ax: Any, rows: list[dict], marks: dict[int, str], coords: Any) -> None:
    style = {"promoted": ("*", "red", 260), "baseline": ("s", "black", 140), "warm start": ("D", "blue", 120)}
    for label, (marker, colour, size) in style.items():
        pts = [r for r in rows if marks.get(r["number"]) == label]
        if pts:
            ax.scatter(
                *coords(pts), marker=marker, s=size, facecolors="none", edgecolors=colour, linewidths=1.5, label=label
            )


def plots(study, out: Path, spec: Any = None, production_dir: str | Path | None = None) -> list[Path]:
    """objective over the searched axes (`objective_figure`, the promoted trial and enqueued baselines marked),
    optimization history, parameter importances (when computable)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    fig = objective_figure(study, spec, marked_trials(study, production_dir))
    if fig is not None:
        made.append(out / "objective.png")
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


def listening_page(
    study, top: list[dict], base_eval_dir: str | None, lines: list[dict], out: Path, ceiling_dir: str | None = None
) -> Path:
    """HTML: held-out lines x (ground truth, codec ceiling, base model, top trials), audio embedded so it is
    self-contained. The codec ceiling is the ground truth through the codec: the best any trial can sound."""
    names = searched(study)
    cols = ["ground truth", "codec ceiling", "base model"] + [
        f"trial {r['number']}<br><small>"
        + html.escape(", ".join(f"{n} {human(r['params'].get(n))}" for n in names))
        + f"<br>objective {r['value']:.3f}</small>"
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
            _audio_tag(Path(ceiling_dir) / "wavs" / f"{line['id']}.wav" if ceiling_dir else None),
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


def training_summary(study, store_dir: str | Path | None = None) -> dict[str, int]:
    """Epochs trained across all trials vs the lower bound (each training key trained once up to the highest
    epoch any trial needed), and (key, epoch) pairs trained more than once (0 when reuse and leases work).

    With `store_dir`, also what the store's training logs saw: `epochs_computed` (every epoch whose training
    began, on any worker) and `epochs_lost` (begun but never saved: a killed or stalled worker), which trials'
    own records cannot see."""
    trained: dict[tuple[str, int], int] = {}
    needed: dict[str, int] = {}
    for stored in map(StoredTrial.of, study.get_trials(deepcopy=False)):
        key = stored.training_key
        if not key:
            continue
        for e in stored.trained_epochs:
            trained[(key, e)] = trained.get((key, e), 0) + 1
        needed[key] = max(needed.get(key, 0), stored.epoch_reached)
    out = {
        "epochs_trained": sum(trained.values()),
        "lower_bound": sum(needed.values()),
        "training_keys": len(needed),
        "trained_twice": sum(n - 1 for n in trained.values() if n > 1),
    }
    if store_dir is not None:
        from qtts_sweep.train.store import CheckpointStore

        store = CheckpointStore(store_dir)
        events = [e for key in needed for e in store.training_log(key)]
        out["epochs_computed"] = sum(e["event"] == "start" for e in events)
        out["epochs_lost"] = out["epochs_computed"] - sum(e["event"] == "saved" for e in events)
    return out


def format_training_summary(s: dict[str, int]) -> str:
    text = (
        f"epochs trained: {s['epochs_trained']} (lower bound {s['lower_bound']}: {s['training_keys']} training keys x "
        f"the highest epoch a trial needed); (key, epoch) trained twice: {s['trained_twice']}"
    )
    if "epochs_computed" in s:
        text += f"; epochs computed by all workers: {s['epochs_computed']} (lost to killed workers: {s['epochs_lost']})"
    return text


def base_model_audio(worker: Any, cfg: Config, clock: Any, log: Any) -> tuple[str | None, float]:
    """The base model's audio of the val lines for the listening page (scale 0, no adapter; cached like any
    evaluation), asked of the sweep's warm worker before it stops. (None, 0) when it is not available."""
    from qtts_sweep.sweep.protocol import TrialRequest

    try:
        worker.submit(TrialRequest(-1, cfg, base=True))
        msg = worker.recv()
    except (OSError, EOFError):
        return None, 0.0
    if msg[0] != "done":
        log(f"base-model reference audio not available: {msg[1:]}")
        return None, 0.0
    clock.merge(msg[1].get("phases", {}))
    return msg[1]["eval_dir"], msg[1]["timings"]["eval_s"]


def finish_sweep(spec: Any, storage: str, parent_run_id: str | None, cfg: Config, base_eval_dir: str | None) -> str:
    """Write and log the report; print and return the summary table."""
    from qtts_sweep.tracking.mlflow_tracker import make_tracker

    study = load_existing_study(spec.study_name, storage)
    out = Path(cfg.paths.runs_dir) / "sweeps" / spec.study_name / "report"
    out.mkdir(parents=True, exist_ok=True)
    summary = training_summary(study, cfg.paths.store_dir)
    table = format_table(study, spec.top_k) + "\n" + format_training_summary(summary)
    (out / "top_trials.txt").write_text(table + "\n")
    top = shown_trials(study, spec.top_k, promotion_pick(study))
    (out / "top_trials.json").write_text(json.dumps(top, indent=2, default=str) + "\n")
    if not spec.multi:
        plots(study, out, spec, cfg.paths.production_dir)
    lines = []
    if top and top[0].get("eval_dir"):
        result = json.loads((Path(top[0]["eval_dir"]) / "result.json").read_text())
        from qtts_sweep.data.prepare import load_dataset

        ds = load_dataset(cfg)
        audio = {r.id: r.audio for rows in ds.splits.values() for r in rows}
        seen = []
        for row in result["per_line"]:
            if row["id"] not in seen:
                seen.append(row["id"])
                lines.append({"id": row["id"], "text": row["text"], "audio": audio.get(row["id"])})
        listening_page(study, top, base_eval_dir, lines, out, (result.get("ceiling") or {}).get("dir"))
    tracker = make_tracker(cfg.tracking)
    winner = winner_report(study, cfg, spec.enqueue[0] if spec.enqueue else None)
    if winner is not None:
        text, data = winner
        table += "\n" + text
        (out / "top_trials.txt").write_text(table + "\n")
        (out / "paired.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
        tracker.log_parent_metrics(parent_run_id, winner_metrics(data))
    tracker.log_parent_artifacts(parent_run_id, out)
    print(table)
    return table


def winner_report(study, cfg: Config, baseline_point: dict | None) -> tuple[str, dict] | None:
    """Is the winner real? Its lead over the runner-up (the best trial that scored another (checkpoint, scale)
    pair) and over the enqueued baseline (when it ran), measured on the objective itself with a bootstrap over
    whole lines, and which trial the tie rule picks. The sweep's own objective and tie-break are used (the ones
    promotion uses). None when there is nothing to compare (multi-objective, fewer than two distinct results)."""
    objective, _ = selection.study_objective(study, cfg.eval.objective)
    verdict = selection.paired_verdict(study, objective)
    if verdict is None or not verdict.leads:
        return None
    best = verdict.best.number
    leads: dict[str, tuple[int, PairedDiff]] = {}
    if verdict.runner_up is not None:
        leads["runner_up"] = (verdict.runner_up, verdict.leads[verdict.runner_up])
    base = selection.enqueued_trial(study, baseline_point) if baseline_point else None
    if base is not None and base.number != best and base.number in verdict.leads:
        leads["baseline"] = (base.number, verdict.leads[base.number])
    text = [f"is the winner real? (trial {best} minus other, on the objective itself, whole lines resampled)"]
    for name, (number, d) in leads.items():
        label = "runner-up" if name == "runner_up" else "enqueued baseline"
        text.append(f"  lead over {label} (trial {number}): {d.describe()}")
    if base is None and baseline_point:
        text.append(f"  enqueued baseline {baseline_point} did not complete: no comparison")
    if verdict.repeats:
        text.append(f"  trial(s) {verdict.repeats} scored the winner's own (checkpoint, scale): not compared")
    if verdict.infeasible:
        text.append(f"  trial(s) {verdict.infeasible} broke a constraint: never chosen over a feasible trial")
    if verdict.thin:
        n = min(d.n for d in verdict.leads.values())
        text.append(
            f"  evidence too thin: {n} held-out line(s) cannot separate trials (need >= {MIN_LINES}); "
            "score more lines (eval.max_lines) before trusting any lead or tie"
        )
    text.append(f"  promotion: {_promotion_line(verdict)}")
    data = {
        "best": best,
        "chosen": verdict.chosen.number,
        "runner_up": verdict.runner_up,
        "tied": verdict.tied,
        "repeats": verdict.repeats,
        "infeasible": verdict.infeasible,
        "thin": verdict.thin,
        "tie_break": list(verdict.rules),
        "explanation": verdict.explain(),
        "leads": {name: {"trial": number, **d.as_dict()} for name, (number, d) in leads.items()},
        "all_leads": {str(n): d.as_dict() for n, d in verdict.leads.items()},
    }
    return "\n".join(text), data


def _promotion_line(verdict: Verdict) -> str:
    if verdict.broke_tie:
        return f"tie within noise: {verdict.explain()}"
    return verdict.explain()


def winner_metrics(data: dict) -> dict[str, float]:
    """The intervals as parent-run metrics: lead_<vs>_{mean,lo,hi,tie} plus the chosen trial."""
    out = {"promote_trial": float(data["chosen"]), "tied_trials": float(len(data["tied"]))}
    for name, d in data["leads"].items():
        out.update({f"lead_{name}_{k}": float(d[k]) for k in ("mean", "lo", "hi", "n")})
        out[f"lead_{name}_tie"] = float(d["tie"])
        out[f"lead_{name}_behind"] = float(d["behind"])
    return out


def report_command(study_name: str, storage: str, top_k: int = 10) -> str:
    return format_table(load_existing_study(study_name, storage), top_k)
