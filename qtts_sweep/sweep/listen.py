"""`qtts-sweep listen STUDY`: a blind A/B listening page for a study's top (checkpoint, scale) pairs.

A small stdlib HTTP server (127.0.0.1 by default) serves one static page. Each comparison plays one held-out line
from two of the top distinct (checkpoint, LoRA scale) pairs, as "A" and "B" in random order with no names, beside
the line's ground truth and codec ceiling as labelled anchors. The listener plays both, then picks A, B or
"same"; the judgement is stored with the study (preference.py) and the tally is logged to the study's MLflow
parent run. The audio is what the trials already synthesized (their `eval_dir/wavs`), nothing is generated here.

Why not optuna-dashboard's preferential optimization: a preferential study is its own study kind, created for
it; it cannot attach to an existing single- or multi-objective sweep study, and it has no place for anchors
(ground truth, codec ceiling) or a "same" answer. optuna-dashboard still plays each trial's audio (they are
uploaded as Optuna artifacts), for browsing.

Owns: choosing the pairs and the comparisons, the page and its JSON API. Does not own: the judgement format and
tally (preference.py), the objective or promotion.
"""

from __future__ import annotations

import itertools
import json
import random
import secrets
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from qtts_sweep.sweep import preference, selection
from qtts_sweep.sweep.result import StoredTrial

DEFAULT_PAIRS = 4


@dataclass
class Candidate:
    """One (checkpoint, scale) pair: the best trial that ran it and its wavs by line id."""

    trial: int
    objective: float
    wavs: dict[str, Path]


@dataclass
class Line:
    id: str
    text: str
    anchors: dict[str, Path] = field(default_factory=dict)  # label -> wav ("ground truth", "codec ceiling")


def candidates(study: Any, k: int = DEFAULT_PAIRS) -> list[Candidate]:
    """The top `k` distinct (checkpoint, scale) pairs by objective, each as its best trial (single objective)."""
    out: list[Candidate] = []
    seen: set[tuple] = set()
    for t in selection.top_trials(study, 10_000):
        stored = StoredTrial.of(t)
        pair = (stored.checkpoint_path, t.params.get("eval.lora_scale"))
        if pair in seen or stored.result_file is None:
            continue
        seen.add(pair)
        result = json.loads(stored.result_file.read_text())
        wavs = {r["id"]: stored.eval_dir / r["wav"] for r in result["per_line"] if r.get("seed", 0) == 0}
        out.append(Candidate(t.number, float(t.value), {i: p for i, p in wavs.items() if p.is_file()}))
        if len(out) == k:
            break
    return out


def held_out_lines(study: Any, pool: list[Candidate], data_dir: str) -> list[Line]:
    """The lines every candidate synthesized, with their anchors: the recording (from the prepared split the
    trial's checkpoint was trained on) and the codec ceiling (the recording through the codec), where found."""
    from qtts_sweep.data.rows import read_split

    best = StoredTrial.of(next(t for t in study.get_trials(deepcopy=False) if t.number == pool[0].trial))
    result = json.loads(best.result_file.read_text())
    ceiling = result.get("ceiling") or {}
    ceiling_wavs = {r["id"]: Path(ceiling["dir"]) / r["wav"] for r in ceiling.get("per_line", [])}
    recordings: dict[str, Path] = {}
    saved = best.checkpoint.path / "config.yaml" if best.checkpoint is not None else None
    if saved is not None and saved.is_file():
        import yaml

        name = (yaml.safe_load(saved.read_text()) or {}).get("data", {}).get("name")
        for split in ("val", "test", "train"):
            path = Path(data_dir) / str(name) / f"{split}.jsonl"
            if name and path.is_file():
                recordings.update({r.id: Path(r.audio) for r in read_split(path)})
    lines = []
    for row in result["per_line"]:
        if row.get("seed", 0) != 0 or not all(row["id"] in c.wavs for c in pool):
            continue
        anchors = {"ground truth": recordings.get(row["id"]), "codec ceiling": ceiling_wavs.get(row["id"])}
        lines.append(Line(row["id"], row["text"], {k: v for k, v in anchors.items() if v and v.is_file()}))
    return lines


class ListeningSession:
    """The comparisons handed out (by opaque id, so the page never learns which trial is A) and their judgements."""

    def __init__(self, study: Any, pool: list[Candidate], lines: list[Line], on_judged=None, seed: int | None = None):
        if len(pool) < 2 or not lines:
            raise ValueError(
                f"study `{study.study_name}` has {len(pool)} distinct (checkpoint, scale) pair(s) with audio and "
                f"{len(lines)} line(s) they all synthesized: a comparison needs two pairs and one line. "
                "Fix: run more trials (qtts-sweep sweep ...), or pass a larger --pairs"
            )
        self.study, self.pool, self.lines, self.on_judged = study, pool, lines, on_judged or (lambda t: None)
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.pending: dict[str, dict[str, Any]] = {}
        self.counts = {pair: 0 for pair in itertools.combinations(range(len(pool)), 2)}

    def next(self) -> dict[str, Any]:
        """A new comparison: the least-judged pair of candidates (random among equals), a random line, random order."""
        with self.lock:
            fewest = min(self.counts.values())
            i, j = self.rng.choice([p for p, n in self.counts.items() if n == fewest])
            if self.rng.random() < 0.5:
                i, j = j, i
            line = self.rng.choice(self.lines)
            cid = secrets.token_hex(8)
            files = {"a": self.pool[i].wavs[line.id], "b": self.pool[j].wavs[line.id]}
            anchors = {f"anchor{n}": (label, p) for n, (label, p) in enumerate(line.anchors.items())}
            files.update({k: p for k, (_, p) in anchors.items()})
            self.pending[cid] = {"a": self.pool[i].trial, "b": self.pool[j].trial, "pair": (i, j), "line": line.id}
            self.pending[cid]["files"] = files
        return {
            "id": cid,
            "text": line.text,
            "a": f"audio/{cid}/a",
            "b": f"audio/{cid}/b",
            "anchors": [{"label": label, "src": f"audio/{cid}/{k}"} for k, (label, _) in anchors.items()],
            "judgements": len(preference.judgements(self.study)),
        }

    def audio(self, cid: str, which: str) -> Path | None:
        with self.lock:
            return self.pending.get(cid, {}).get("files", {}).get(which)

    def judge(self, cid: str, choice: str, listener: str = "") -> dict[str, Any]:
        """Store the listener's answer ("a", "b" or "same") for comparison `cid`."""
        with self.lock:
            c = self.pending.pop(cid, None)
            if c is None:
                raise KeyError(cid)
            if choice not in ("a", "b", preference.SAME):
                self.pending[cid] = c
                raise ValueError(choice)
            winner = preference.SAME if choice == preference.SAME else c[choice]
            key = preference.record(self.study, c["a"], c["b"], c["line"], winner, listener)
            self.counts[tuple(sorted(c["pair"]))] += 1
            tallies = preference.tally(self.study)
        self.on_judged(tallies)
        return {"stored": key, "judgements": sum(t.n for t in tallies.values()) // 2}


def _handler(session: ListeningSession, page: bytes, listener: str):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # quiet: the CLI prints the address once
            pass

        def _send(self, code: int, body: bytes, ctype: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def _json(self, code: int, obj: Any) -> None:
            self._send(code, json.dumps(obj).encode(), "application/json")

        def do_GET(self) -> None:
            if self.path in ("/", "/index.html"):
                return self._send(200, page, "text/html; charset=utf-8")
            if self.path == "/api/next":
                return self._json(200, session.next())
            parts = self.path.strip("/").split("/")
            if len(parts) == 3 and parts[0] == "audio":
                path = session.audio(parts[1], parts[2])
                if path is not None and path.is_file():
                    return self._send(200, path.read_bytes(), "audio/wav")
            self._json(404, {"error": "not found"})

        def do_POST(self) -> None:
            if self.path != "/api/judge":
                return self._json(404, {"error": "not found"})
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                return self._json(200, session.judge(str(body.get("id")), str(body.get("choice")), listener))
            except KeyError:
                return self._json(409, {"error": "unknown or already judged comparison; load the next one"})
            except ValueError:
                return self._json(400, {"error": "choice must be a, b or same"})

    return Handler


def make_server(session: ListeningSession, study_name: str, host: str = "127.0.0.1", port: int = 0, listener=""):
    """The HTTP server (not yet serving: call `serve_forever`); port 0 picks a free one (`server.server_port`)."""
    page = PAGE.replace("__STUDY__", json.dumps(study_name)[1:-1].replace("<", "&lt;")).encode()
    return ThreadingHTTPServer((host, port), _handler(session, page, listener))


def open_session(cfg: Any, study_name: str, storage: str, pairs: int = DEFAULT_PAIRS, seed: int | None = None):
    """The study's listening session; each judgement also logs the tally to the study's MLflow parent run."""
    from qtts_sweep.sweep.storage import load_existing_study
    from qtts_sweep.tracking.mlflow_tracker import make_tracker

    study = load_existing_study(study_name, storage)
    if selection.is_multi(study):
        raise ValueError(f"study `{study_name}` is multi-objective: listening compares top trials of one objective")
    pool = candidates(study, pairs)
    lines = held_out_lines(study, pool, cfg.paths.data_dir) if pool else []
    tracker = make_tracker(cfg.tracking)
    parent: list[str | None] = []

    def log(tallies: dict) -> None:
        if not parent:
            parent.append(tracker.study_parent(study_name, {}))
        tracker.log_parent_metrics(parent[0], preference.metrics(tallies))

    return ListeningSession(study, pool, lines, log, seed)


def serve(cfg: Any, study_name: str, storage: str, host: str, port: int, pairs: int, listener: str = "") -> None:
    """`qtts-sweep listen`: serve until Ctrl-C."""
    session = open_session(cfg, study_name, storage, pairs)
    server = make_server(session, study_name, host, port, listener)
    where = f"http://{host}:{server.server_port}/"
    print(
        f"listening page for study `{study_name}`: {where}\n"
        f"  {len(session.pool)} pairs (trials {[c.trial for c in session.pool]}), {len(session.lines)} lines; "
        "judgements are stored in the study; Ctrl-C stops"
        + ("" if host in ("127.0.0.1", "localhost", "::1") else "\n  warning: reachable from the network, no login")
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Listen: __STUDY__</title>
<style>
body{font-family:sans-serif;max-width:860px;margin:2em auto;color:#222}
.row{display:flex;gap:2em;margin:1em 0}.box{flex:1;border:1px solid #ccc;border-radius:6px;padding:1em}
.anchor{background:#f6f6f6}button{font-size:1.1em;padding:.5em 1.2em;margin-right:.6em}
#text{font-size:1.2em;font-style:italic}#status{color:#555}audio{width:100%}
</style></head><body>
<h2>Blind A/B listening: study <code>__STUDY__</code></h2>
<p>Play the line from A and from B (the same text, two different trials, in random order), then choose.
The anchors are the real recording and the recording through the codec (the best a trial can sound).</p>
<p id="text"></p>
<div class="row" id="anchors"></div>
<div class="row">
 <div class="box"><h3>A</h3><audio id="a" controls preload="auto"></audio></div>
 <div class="box"><h3>B</h3><audio id="b" controls preload="auto"></audio></div>
</div>
<p><button id="choose-a" disabled>A is better</button><button id="choose-same" disabled>Same</button>
<button id="choose-b" disabled>B is better</button></p>
<p id="status">loading...</p>
<script>
let current = null, played = {};
const $ = (id) => document.getElementById(id);
function ready() {
  const ok = played.a && played.b;
  for (const c of ["a", "same", "b"]) $("choose-" + c).disabled = !ok;
  $("status").textContent = (ok ? "choose A, B or same" : "play A and B to choose") +
    " (" + current.judgements + " judgements so far)";
}
async function next() {
  current = await (await fetch("api/next")).json();
  played = {};
  $("text").textContent = current.text;
  $("anchors").innerHTML = "";
  for (const an of current.anchors) {
    const box = document.createElement("div"); box.className = "box anchor";
    const h = document.createElement("h4"); h.textContent = an.label;
    const au = document.createElement("audio"); au.controls = true; au.src = an.src;
    box.append(h, au); $("anchors").append(box);
  }
  for (const s of ["a", "b"]) { $(s).src = current[s]; $(s).load(); }
  ready();
}
for (const s of ["a", "b"]) $(s).addEventListener("play", () => { played[s] = true; ready(); });
async function choose(choice) {
  const r = await fetch("api/judge", {method: "POST", headers: {"Content-Type": "application/json"},
                                     body: JSON.stringify({id: current.id, choice: choice})});
  const j = await r.json();
  $("status").textContent = r.ok ? "stored (" + j.judgements + " judgements so far)" : j.error;
  document.body.dataset.stored = r.ok ? j.stored : "";
  if (r.ok) { await next(); $("status").textContent = "stored; next line (" + j.judgements + " judgements)"; }
}
for (const c of ["a", "same", "b"]) $("choose-" + c).addEventListener("click", () => choose(c));
next();
</script></body></html>
"""
