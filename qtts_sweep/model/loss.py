"""The one training loss of qtts-sweep, imported by training, validation and the benchmark (no copies).

For an utterance with prompt length L and N audio frames (see the layout in `modeling.py`):
- talker: the logits at position L-1+q are scored against codebook 0 of frame q (q = 0..N-1) and the logits at
  L-1+N against EOS — targets shifted once, with our own cross-entropy (the Hugging Face causal-LM loss would
  shift a second time: upstream bug, speech gets faster every epoch);
- code predictor: head i (i = 1..15) is scored against group i of the same frame (upstream passes already
  aligned labels to the shifting loss: head i learns group i+1 and the last group is never learned);
- the code predictor's context for frame q is the talker state at L-1+q — the state that predicted codebook 0
  of frame q, as in generation — never the state at L+q, whose input already holds frame q's codes;
- text goes through `talker.text_projection` (in `modeling.prompt_embeds`).

`LossVariant` reproduces the upstream bugs *only* so tests and the benchmark can show they are caught.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from qtts_sweep.model import modeling


@dataclass(frozen=True)
class LossVariant:
    """Deliberate bugs for tests/benchmarks. The default is the correct loss."""

    double_shift: bool = False  # upstream bugs 1+2: targets shifted twice
    leak_current_frame: bool = False  # upstream commit 022e286: code predictor reads the state at q, not q-1


CORRECT = LossVariant()


@dataclass
class Example:
    """One utterance ready for the loss: role/text token ids, codes (N, 16) and the speaker embedding (D,)."""

    role_ids: Any
    text_ids: Any
    codes: Any
    spk_embedding: Any


@dataclass
class Aligned:
    """Logits paired with their targets, exactly as the loss scores them (exposed for the property tests)."""

    talker_logits: Any  # (P, V): every scored talker position of the batch, in order
    talker_targets: Any  # (P,)
    talker_index: list[tuple[int, int]]  # (example, target frame q; q == N means EOS) per row
    cp_logits: Any  # (M, G-1, V)
    cp_targets: Any  # (M, G-1)
    cp_index: list[tuple[int, int]]  # (example, frame) per row


@dataclass
class LossOutput:
    loss: Any  # scalar tensor: talker + subtalker_weight * code predictor
    talker_loss: Any
    subtalker_loss: Any
    talker_acc: float  # teacher-forced top-1 accuracy of codebook 0 (+ EOS)
    subtalker_acc: float  # teacher-forced top-1 accuracy of groups 1..15


def batch_inputs(model: Any, examples: list[Example]):
    """Right-padded talker inputs for a batch: (embeds (B, T, D), mask (B, T), prompt lens, frame counts)."""
    import torch

    seqs, prompt_lens, n_frames = [], [], []
    for ex in examples:
        emb, L = modeling.utterance_embeds(model, ex.role_ids, ex.text_ids, ex.spk_embedding, ex.codes)
        seqs.append(emb)
        prompt_lens.append(L)
        n_frames.append(ex.codes.shape[0])
    T = max(s.shape[0] for s in seqs)
    embeds = torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True)  # (B, T, D), zeros after each end
    mask = torch.zeros(len(seqs), T, dtype=torch.long, device=embeds.device)
    for b, s in enumerate(seqs):
        mask[b, : s.shape[0]] = 1
    return embeds, mask, prompt_lens, n_frames


def align(model: Any, examples: list[Example], variant: LossVariant = CORRECT) -> Aligned:
    """Run the talker and code predictor teacher-forced and pair every logit with its target."""
    import torch

    ids = modeling.special_ids(model)
    embeds, mask, prompt_lens, n_frames = batch_inputs(model, examples)
    hidden = modeling.talker_hidden(model, embeds, mask)  # (B, T, H)
    shift = 2 if variant.double_shift else 1
    rows, targets, t_index = [], [], []
    ctx, cp_codes, c_index = [], [], []
    for b, ex in enumerate(examples):
        L, N = prompt_lens[b], n_frames[b]
        codes = ex.codes.to(hidden.device)
        # Input at position L+q holds frame q; frame "N" is EOS. Position p is scored against the frame whose
        # input sits at p+shift.
        frame_code0 = torch.cat([codes[:, 0], torch.tensor([ids["eos"]], device=hidden.device)])  # (N+1,)
        first = L - 1
        last = L - 1 + N - (shift - 1)  # inclusive; the double shift loses the last target
        positions = torch.arange(first, last + 1, device=hidden.device)
        target_frames = positions + shift - L  # frame index each position is scored against
        rows.append(hidden[b, positions])
        targets.append(frame_code0[target_frames])
        t_index += [(b, int(q)) for q in target_frames]
        # Code predictor context for frame q: state at L-1+q (predicted codebook 0 of frame q).
        offset = 0 if variant.leak_current_frame else -1
        ctx.append(hidden[b, L + offset + torch.arange(N, device=hidden.device)])
        cp_codes.append(codes)
        c_index += [(b, q) for q in range(N)]
    talker_logits = modeling.talker_logits(model, torch.cat(rows))
    codes_all = torch.cat(cp_codes)  # (M, 16)
    cp_logits = modeling.code_predictor_logits(model, torch.cat(ctx), codes_all)  # (M, 15, V)
    if variant.double_shift:
        # Upstream: labels codes[:, 1:] shifted again by the causal-LM loss -> head i scored on group i+1.
        cp_logits, cp_targets = cp_logits[:, :-1], codes_all[:, 2:]
    else:
        cp_targets = codes_all[:, 1:]
    return Aligned(talker_logits, torch.cat(targets), t_index, cp_logits, cp_targets, c_index)


def cross_entropy(logits, targets):
    """Mean cross-entropy over already aligned (logits, targets): no shifting here."""
    import torch.nn.functional as F

    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1))


def compute_loss(
    model: Any, examples: list[Example], subtalker_weight: float, variant: LossVariant = CORRECT
) -> LossOutput:
    """The training objective: CE(talker) + subtalker_weight * CE(code predictor heads 1..15)."""
    import torch

    a = align(model, examples, variant)
    talker_loss = cross_entropy(a.talker_logits, a.talker_targets)
    sub_loss = cross_entropy(a.cp_logits, a.cp_targets)
    with torch.no_grad():
        t_acc = (a.talker_logits.argmax(-1) == a.talker_targets).float().mean().item()
        s_acc = (a.cp_logits.argmax(-1) == a.cp_targets).float().mean().item()
    return LossOutput(talker_loss + subtalker_weight * sub_loss, talker_loss, sub_loss, t_acc, s_acc)
