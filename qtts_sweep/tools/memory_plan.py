"""The dry run's memory plan: what LoRA training and the eval phase of one sweep worker hold on the device, at the
dataset's longest line, for batch 1/2/4 and the largest batch per card size.

Each term says how it was obtained (counted, measured, computed, assumed): weights and adapters are counted,
saved activations are measured on real training steps and fitted linearly in talker positions, the KV cache is
computed from the published shape. docs/real-size.md has the terms. Owns: the plan's numbers and their text. Does
not own: running the package's path (dry_run.py) or the report around the plan (dry_run_report.py).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from qtts_sweep.config.schema import Config

GIB = 2**30
FRAME_RATE = 12.5  # codec frames per second
PROMPT_ROWS = 10  # talker positions besides text and frames (modeling.prompt_embeds: 3 role + 5 prefix + eos + bos)
CARDS_GB = (24, 40, 80)
PLAN_BATCHES = (1, 2, 4)
# Allowance for the CUDA context and allocator fragmentation, which max_memory_allocated does not see. A stated
# allowance, not a measurement; the GPU run prints the measured reserved-vs-allocated gap beside it.
RESERVE_GIB = 1.5


@dataclass
class ActPoint:
    """One measured training step: batch, talker positions per line, saved-for-backward bytes (as a bf16 run holds
    them: `activation_bytes`),
    CUDA peak above the resident state (None on CPU), step seconds (None when forward only)."""

    batch: int
    positions: int
    saved_bytes: int
    cuda_peak_delta: int | None = None
    seconds: float | None = None
    fp32_bytes: int = 0  # the part of saved_bytes kept in fp32 (inside LoRA adapters and norms)


# Bytes per element of a saved activation in a bf16 run: most tensors are bf16; peft keeps each adapter in fp32
# and casts its input to the adapter's dtype (lora_dropout / lora_A / lora_B save fp32 tensors), and RMSNorm
# upcasts its input to fp32 before the variance. On a CPU run in fp32 everything is fp32, so the kind is decided
# by the module a tensor is saved in (`keeps_fp32`), not by the tensor's own dtype.
ACT_BYTES = {"bf16": 2, "fp32_kept": 4}
FP32_MODULE_PARTS = ("lora_A", "lora_B", "lora_dropout")


def keeps_fp32(module_name: str, class_name: str) -> bool:
    """Whether tensors saved inside this module stay fp32 in a bf16 run: peft's adapter parts and norms."""
    parts = module_name.split(".")
    return any(p in FP32_MODULE_PARTS for p in parts) or "Norm" in class_name


def activation_bytes(numel_by_kind: dict[str, int]) -> int:
    """Bytes of saved activations in a bf16 run, from element counts per kind (ACT_BYTES)."""
    unknown = set(numel_by_kind) - set(ACT_BYTES)
    if unknown:
        raise ValueError(f"unknown activation kind {sorted(unknown)}; known: {sorted(ACT_BYTES)}")
    return sum(n * ACT_BYTES[k] for k, n in numel_by_kind.items())


def kv_cache_bytes(attn: dict[str, Any], positions: int, batch: int, dtype_bytes: int = 2) -> int:
    """K and V of every layer for `positions` tokens of `batch` sequences (a shape's talker / code_predictor)."""
    per_token = 2 * attn["num_hidden_layers"] * attn["num_key_value_heads"] * attn["head_dim"] * dtype_bytes
    return per_token * positions * batch


@dataclass
class EvalPlan:
    """The eval phase the same worker runs after training: synthesis at `eval.batch_size`.

    kv_bytes: talker KV cache at `batch` x `positions` (prompt + text + max_new_tokens frames) plus the code
    predictor's (17 positions per frame), computed from the shape; decode_bytes / speaker_bytes: the codec decode's
    and the speaker encoder's working memory, measured on CUDA (peak of the scoring phase above the resident model
    and cache), None where not measured (then they are not in the total, and the output says so)."""

    batch: int
    positions: int
    kv_bytes: int
    decode_bytes: int | None = None
    speaker_bytes: int | None = None


@dataclass
class MemoryPlan:
    weights_bytes: int  # talker + code predictor + speaker encoder, bf16
    codec_bytes: int  # the speech tokenizer, resident on the device with the model, bf16
    lora_bytes: int
    grad_bytes: int
    optim_bytes: int
    points: list[ActPoint]
    longest_positions: int
    resident_cuda: int | None = None  # allocated after a step (weights + LoRA + optimizer state), CUDA only
    reserved_gap: int | None = None  # CUDA reserved minus allocated at the peak (fragmentation), CUDA only
    eval: EvalPlan | None = None  # the eval phase of the same worker; None: not planned

    def eval_total(self) -> float:
        """Eval-phase memory: weights + codec + LoRA (no gradients, no optimizer state) + KV cache + the measured
        decode and speaker-encoder terms (0 when not measured)."""
        if self.eval is None:
            return 0.0
        e = self.eval
        extra = (e.decode_bytes or 0) + (e.speaker_bytes or 0)
        return float(self.weights_bytes + self.codec_bytes + self.lora_bytes + e.kv_bytes + extra)

    def peak(self, batch: int) -> float:
        """The worker's peak: training at `batch` or its eval phase, whichever is larger."""
        return max(self.best(batch), self.eval_total())

    def fit(self) -> tuple[float, float]:
        """(intercept, bytes per talker position) of saved activations per line, from the two batch-1 points."""
        ones = sorted((p for p in self.points if p.batch == 1), key=lambda p: p.positions)
        lo, hi = ones[0], ones[-1]
        slope = (hi.saved_bytes - lo.saved_bytes) / max(hi.positions - lo.positions, 1)
        return lo.saved_bytes - slope * lo.positions, slope

    def activations(self, batch: int, positions: int) -> float:
        a, b = self.fit()
        return batch * (a + b * positions)  # padded batches: every line as long as the longest

    def fixed(self) -> int:
        return self.weights_bytes + self.codec_bytes + self.lora_bytes + self.grad_bytes + self.optim_bytes

    def estimate(self, batch: int) -> float:
        return self.fixed() + self.activations(batch, self.longest_positions)

    def measured(self, batch: int) -> int | None:
        for p in self.points:
            if p.batch == batch and p.positions == self.longest_positions and p.cuda_peak_delta is not None:
                return (self.resident_cuda or 0) + p.cuda_peak_delta
        return None

    def best(self, batch: int) -> float:
        m = self.measured(batch)
        return float(m) if m is not None else self.estimate(batch)

    def largest_batch(self, card_gb: int) -> int:
        """Largest batch whose total fits the card less the reserve (linear in batch between measurements)."""
        usable = card_gb * 1e9 - RESERVE_GIB * GIB
        one, two = self.best(1), self.best(2)
        per_line = max(two - one, 1.0)
        if one > usable or self.eval_total() > usable:
            return 0
        return int(1 + (usable - one) // per_line)


@contextmanager
def saved_activation_bytes(model: Any) -> Iterator[list[int]]:
    """Bytes of the tensors autograd saves for backward while the block runs (the activations a training step
    keeps), each storage counted once, parameters and buffers excluded; floating tensors are counted at what they
    take in a bf16 run (`activation_bytes`: 4 bytes inside LoRA adapters and norms, `keeps_fp32`, else 2),
    whatever dtype this run uses. The total lands in the yielded list, then the fp32-kept part of it."""
    import torch

    resident = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    seen: dict[int, tuple[str, int]] = {}
    depth = [0]  # how many fp32-keeping modules the forward is inside now
    handles = []
    for name, module in model.named_modules():
        if keeps_fp32(name, type(module).__name__):
            handles.append(module.register_forward_pre_hook(lambda *_: depth.__setitem__(0, depth[0] + 1)))
            handles.append(module.register_forward_hook(lambda *_: depth.__setitem__(0, depth[0] - 1)))

    def pack(t):
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in resident and ptr not in seen:
            if t.is_floating_point():
                seen[ptr] = ("fp32_kept" if depth[0] > 0 else "bf16", storage.nbytes() // t.element_size())
            else:
                seen[ptr] = ("raw", storage.nbytes())
        # Detached: returning `t` itself would make an op's saved output own its own grad_fn, a reference cycle
        # through C++ that Python's gc cannot see (the whole graph of a forward-only pass would leak).
        return t.detach()

    total: list[int] = []
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            yield total
    finally:
        for h in handles:
            h.remove()
    raw = sum(n for kind, n in seen.values() if kind == "raw")
    counts: dict[str, int] = {}
    for kind, n in seen.values():
        if kind != "raw":
            counts[kind] = counts.get(kind, 0) + n
    total.append(activation_bytes(counts) + raw)
    total.append(activation_bytes({"fp32_kept": counts.get("fp32_kept", 0)}))


def _line_examples(loaded: Any, text_ids: Any, frames: int, batch: int, spk: Any, seed: int) -> list:
    import torch

    from qtts_sweep.model.loss import Example

    g = torch.Generator().manual_seed(seed)
    role = loaded.tts.processor(text="<|im_start|>assistant\n", return_tensors="pt")["input_ids"][0][:3]
    vocab = loaded.model.config.talker_config.code_predictor_config.vocab_size
    return [Example(role, text_ids, torch.randint(0, vocab, (frames, 16), generator=g), spk) for _ in range(batch)]


def longest_line(loaded: Any, rows: list, durations: dict[str, float]) -> dict[str, Any]:
    """The dataset line with the most talker positions (text tokens + prompt rows + codec frames)."""
    from qtts_sweep.model.modeling import tokenize_line

    best: dict[str, Any] = {}
    for r in rows:
        _, text_ids = tokenize_line(loaded.tts, r.text)
        frames = math.ceil(durations[r.id] * FRAME_RATE)
        positions = len(text_ids) + PROMPT_ROWS + frames
        if positions > best.get("positions", -1):
            best = {"id": r.id, "seconds": durations[r.id], "frames": frames, "text_ids": text_ids}
            best |= {"tokens": len(text_ids), "positions": positions, "chars": len(r.text)}
    return best


def eval_plan(config: Any, cfg: Config, longest: dict[str, Any]) -> EvalPlan:
    """The eval phase at `eval.batch_size` on the longest line: KV caches computed from the model's config; the
    codec decode and speaker encoder are not measured here (None)."""
    dec = cfg.eval.decoding
    max_new = math.ceil(dec.frames_per_char * longest.get("chars", 0) + dec.min_frames)
    positions = PROMPT_ROWS + longest["tokens"] + max_new
    talker = config.talker_config
    predictor = talker.code_predictor_config

    def attn(c: Any) -> dict[str, int]:
        head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        return {
            "num_hidden_layers": c.num_hidden_layers,
            "num_key_value_heads": c.num_key_value_heads,
            "head_dim": head_dim,
        }

    batch = cfg.eval.batch_size
    kv = kv_cache_bytes(attn(talker), positions, batch) + kv_cache_bytes(attn(predictor), 17, batch)
    return EvalPlan(batch=batch, positions=positions, kv_bytes=kv)


def measure_plan(loaded: Any, cfg: Config, longest: dict[str, Any], log: Callable[[str], None]) -> MemoryPlan:
    """Measure every term of the memory plan on the loaded model (LoRA injected): see docs/real-size.md."""
    import torch

    from qtts_sweep.model.loss import compute_loss

    model, cuda = loaded.model, loaded.device.startswith("cuda")
    params = [p for p in model.parameters() if p.requires_grad]
    trainable = {id(p) for p in params}
    codec = loaded.model.speech_tokenizer.model
    codec_ids = {id(p) for p in codec.parameters()}
    base = sum(p.numel() for p in model.parameters() if id(p) not in trainable and id(p) not in codec_ids)
    lora_bytes = sum(p.numel() * p.element_size() for p in params)
    opt = torch.optim.AdamW(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    spk = torch.randn(model.config.talker_config.hidden_size, generator=torch.Generator().manual_seed(0))
    spk = spk.to(loaded.device, model.dtype)
    ids, frames = longest["text_ids"], longest["frames"]
    long_pos = longest["positions"]
    short = (ids[: max(len(ids) // 2, 1)], max(frames // 2, 2))
    short_pos = len(short[0]) + PROMPT_ROWS + short[1]
    # CPU: forward-only for the extra points (saved bytes need no backward); CUDA: full steps, batch 4 measured.
    grid = [(1, short, short_pos, cuda), (1, (ids, frames), long_pos, True), (2, (ids, frames), long_pos, cuda)]
    if cuda:
        grid.append((4, (ids, frames), long_pos, True))
    points: list[ActPoint] = []
    model.train()
    for batch, (t_ids, n), pos, full in grid:
        examples = _line_examples(loaded, t_ids, n, batch, spk, seed=batch)
        for _ in range(2 if cuda else 1):  # CUDA: the first round warms kernels and allocates optimizer state
            if cuda:
                torch.cuda.synchronize()
                resident = torch.cuda.memory_allocated()
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            with saved_activation_bytes(model) as saved:
                out = compute_loss(model, examples, cfg.train.subtalker_loss_weight)
            if full:
                out.loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
            else:
                del out
            if cuda:
                torch.cuda.synchronize()
            seconds = time.perf_counter() - t0
            point = ActPoint(batch, pos, saved[0], seconds=seconds if full else None, fp32_bytes=saved[1])
            if cuda:
                point.cuda_peak_delta = torch.cuda.max_memory_allocated() - resident
        points.append(point)
        log(
            f"    batch {batch} x {pos} positions: saved activations {point.saved_bytes / GIB:.3f} GiB (as in bf16)"
            + (f", CUDA peak +{point.cuda_peak_delta / GIB:.2f} GiB" if cuda else "")
            + (f", step {point.seconds:.2f} s" if point.seconds else "")
        )
    model.eval()
    optim_bytes = sum(
        t.numel() * t.element_size() for st in opt.state.values() for t in st.values() if torch.is_tensor(t)
    )
    plan = MemoryPlan(
        weights_bytes=base * 2,
        codec_bytes=sum(p.numel() for p in codec.parameters()) * 2,
        lora_bytes=lora_bytes,
        grad_bytes=lora_bytes,
        optim_bytes=optim_bytes,
        points=points,
        longest_positions=long_pos,
    )
    plan.eval = eval_plan(model.config, cfg, longest)
    if cuda:
        plan.resident_cuda = torch.cuda.memory_allocated()
        plan.reserved_gap = torch.cuda.max_memory_reserved() - torch.cuda.max_memory_allocated()
    del opt
    return plan


def format_plan(plan: MemoryPlan, longest: dict[str, Any]) -> list[str]:
    """The plan as text, one line per term, each saying how it was obtained: counted (parameters x bytes),
    measured (on this run), computed (a formula on the published shape) or assumed / not measured."""
    a, b = plan.fit()
    g = 1e9
    out = [
        "memory plan: LoRA training in bf16 at the dataset's longest line "
        f"({longest['id']}: {longest['seconds']:.2f} s, {longest['frames']} frames + {longest['tokens']} text "
        f"tokens + {PROMPT_ROWS} prompt rows = "
        f"{plan.longest_positions} talker positions), then the same worker's eval phase",
        f"  weights      {plan.weights_bytes / g:8.3f} GB  counted: talker + code predictor + speaker encoder x 2 B",
        f"  codec        {plan.codec_bytes / g:8.3f} GB  counted: speech tokenizer parameters x 2 B",
        f"  LoRA         {plan.lora_bytes / g:8.3f} GB  counted: adapter parameters at their dtype (fp32)",
        f"  gradients    {plan.grad_bytes / g:8.3f} GB  counted: one per LoRA parameter",
        f"  AdamW state  {plan.optim_bytes / g:8.3f} GB  measured: optimizer state after a real step",
        f"  = {plan.fixed() / g:.2f} GB fixed during training",
        f"  activations (measured: saved for backward at {len(plan.points)} points, as a bf16 run holds them: "
        f"fp32 inside LoRA adapters and norms, bf16 elsewhere; fitted): "
        f"{b / 1e6:.3f} MB per talker position + {a / 1e6:.1f} MB per line",
    ]
    for p in plan.points:
        per_line = p.saved_bytes / p.batch
        pred = a + b * p.positions
        out.append(
            f"    measured batch {p.batch} x {p.positions}: {p.saved_bytes / g:.3f} GB "
            f"(per line {per_line / g:.3f} GB, fit {pred / g:.3f} GB; fp32 in adapters/norms {p.fp32_bytes / g:.3f} GB)"
            + (f", CUDA peak above resident {p.cuda_peak_delta / g:.2f} GB" if p.cuda_peak_delta is not None else "")
        )
    if plan.eval is not None:
        e = plan.eval
        out.append(f"  eval (batch {e.batch} = eval.batch_size, {e.positions} talker positions at most per line):")
        out.append(f"    weights + codec + LoRA {plan.weights_bytes + plan.codec_bytes + plan.lora_bytes:,} B as above")
        out.append(
            f"    KV cache      {e.kv_bytes / g:8.3f} GB  computed: K and V per layer x kv heads x head dim, bf16"
        )
        for name, v in (("codec decode", e.decode_bytes), ("speaker encoder", e.speaker_bytes)):
            out.append(
                f"    {name:<15} {v / g:8.3f} GB  measured"
                if v is not None
                else f"    {name:<15}      n/a  not measured here: left out of the total (working memory only; "
                "its weights are counted above)"
            )
        out.append(f"    = {plan.eval_total() / g:.2f} GB eval total")
    head = "  batch   estimate" + ("   CUDA measured" if plan.resident_cuda is not None else "") + "   worker peak"
    out.append(head)
    for bsz in PLAN_BATCHES:
        m = plan.measured(bsz)
        out.append(
            f"  {bsz:>5} {plan.estimate(bsz) / g:9.2f} GB"
            + (f" {m / g:14.2f} GB" if m is not None else "")
            + f" {plan.peak(bsz) / g:10.2f} GB"
        )
    if plan.reserved_gap is not None:
        out.append(f"  CUDA allocator reserved minus allocated at the peak: {plan.reserved_gap / g:.2f} GB (measured)")
    out.append(f"  reserve {RESERVE_GIB} GiB per card for CUDA context and fragmentation: assumed, not measured")
    basis = "CUDA measured" if plan.resident_cuda is not None else "estimate"
    fits = ", ".join(f"{c} GB -> {plan.largest_batch(c)}" for c in CARDS_GB)
    out.append(f"  largest training batch whose worker peak fits ({basis}, eval phase included): {fits}")
    return out
