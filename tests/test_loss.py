"""The loss is provably the objective generation uses: layout, alignment, no leak, and an overfit test that a
double-shifted loss fails. All on the real qwen-tts model code (tiny preset), never a fake."""

from __future__ import annotations

import pytest
import torch

from qtts_sweep.model import modeling
from qtts_sweep.model.loss import CORRECT, Example, LossVariant, align, compute_loss
from tests.helpers.sweeps import DEMO_DIR

TEXT = "Hello there, general."


@pytest.fixture(scope="module")
def spk(tiny_loaded):
    return modeling.speaker_embedding(tiny_loaded, modeling.load_audio_24k(DEMO_DIR / "ref" / "ref.flac"))


@pytest.fixture(scope="module")
def generated(tiny_loaded, spk):
    """Greedy generation with every talker / code-predictor input captured."""
    model = tiny_loaded.model
    talker_in, cp_in = [], []
    hooks = [
        model.talker.model.register_forward_pre_hook(
            lambda m, a, kw: talker_in.append(kw["inputs_embeds"].detach().clone()), with_kwargs=True
        ),
        model.talker.code_predictor.model.register_forward_pre_hook(
            lambda m, a, kw: cp_in.append(kw["inputs_embeds"].detach().clone()), with_kwargs=True
        ),
    ]
    try:
        codes = modeling.generate_codes(tiny_loaded, [TEXT], spk, max_new_tokens=10, **modeling.GREEDY)[0]
    finally:
        for h in hooks:
            h.remove()
    return codes, talker_in, cp_in


def _example(tiny_loaded, spk, codes, text=TEXT):
    role, text_ids = modeling.tokenize_line(tiny_loaded.tts, text)
    return Example(role, text_ids, codes, spk)


def test_training_input_layout_equals_the_generation_prompt(tiny_loaded, spk, generated):
    codes, talker_in, _ = generated
    gen_seq = torch.cat([x[0] for x in talker_in])  # prefill prompt, then one row per generated frame
    ex = _example(tiny_loaded, spk, codes)
    with torch.no_grad():
        train_seq, L = modeling.utterance_embeds(tiny_loaded.model, ex.role_ids, ex.text_ids, spk, codes)
    assert talker_in[0].shape[1] == L == len(ex.text_ids) + 10
    n = codes.shape[0]  # frames 0..N-1 are inputs to both
    torch.testing.assert_close(train_seq[: L + n], gen_seq[: L + n], rtol=0, atol=1e-6)


def test_code_predictor_inputs_equal_generation(tiny_loaded, spk, generated):
    codes, _, cp_in = generated
    groups = codes.shape[1]
    per_frame = [torch.cat([x[0] for x in cp_in[i : i + groups - 1]]) for i in range(0, len(cp_in), groups - 1)]
    captured = []
    hook = tiny_loaded.model.talker.code_predictor.model.register_forward_pre_hook(
        lambda m, a, kw: captured.append(kw["inputs_embeds"].detach().clone()), with_kwargs=True
    )
    try:
        with torch.no_grad():
            align(tiny_loaded.model, [_example(tiny_loaded, spk, codes)])
    finally:
        hook.remove()
    train = captured[0]  # (N, 16, H): one sequence per frame
    assert train.shape[:2] == (codes.shape[0], groups)
    for q in range(codes.shape[0]):
        # generation's context state comes from the KV-cached step; training recomputes it: allow float noise
        torch.testing.assert_close(train[q], per_frame[q], rtol=0, atol=2e-5)


def test_targets_are_next_frame_codebook0_and_same_frame_groups(tiny_loaded, spk, generated):
    codes = generated[0]
    with torch.no_grad():
        a = align(tiny_loaded.model, [_example(tiny_loaded, spk, codes)])
    eos = tiny_loaded.model.config.talker_config.codec_eos_token_id
    n = codes.shape[0]
    assert [q for _, q in a.talker_index] == list(range(n + 1))
    assert a.talker_targets.tolist() == codes[:, 0].tolist() + [eos]
    assert torch.equal(a.cp_targets, codes[:, 1:])
    # Greedy generation chose argmax at each step: teacher forcing must reproduce those choices.
    allowed = torch.full_like(a.talker_logits, float("-inf"))
    allowed[:, : tiny_loaded.model.config.talker_config.vocab_size - 1024] = 0
    allowed[:, eos] = 0
    picks = (a.talker_logits + allowed)[:n].argmax(-1)
    assert picks.tolist() == codes[:, 0].tolist()
    assert torch.equal(a.cp_logits.argmax(-1), codes[:, 1:])


def _logits_for(tiny_loaded, spk, codes, variant=CORRECT):
    with torch.no_grad():
        a = align(tiny_loaded.model, [_example(tiny_loaded, spk, codes)], variant)
    return a


@pytest.mark.parametrize("q", [0, 3, 7])
def test_no_leak_talker(tiny_loaded, spk, generated, q):
    codes = generated[0]
    base = _logits_for(tiny_loaded, spk, codes)
    changed = codes.clone()
    changed[q:] = torch.randint(0, 2048, changed[q:].shape, generator=torch.Generator().manual_seed(q))
    after = _logits_for(tiny_loaded, spk, changed)
    # talker logit for frame q (and every earlier one) is unchanged when frames >= q change
    torch.testing.assert_close(after.talker_logits[: q + 1], base.talker_logits[: q + 1], rtol=0, atol=1e-6)
    assert not torch.allclose(after.talker_logits[q + 1 :], base.talker_logits[q + 1 :])


@pytest.mark.parametrize(("q", "i"), [(2, 1), (2, 5), (5, 15)])
def test_no_leak_code_predictor(tiny_loaded, spk, generated, q, i):
    codes = generated[0]
    head = i - 1  # head for group i
    for variant, must_hold in ((LossVariant(), True), (LossVariant(leak_current_frame=True), False)):
        base = _logits_for(tiny_loaded, spk, codes, variant)
        changed = codes.clone()
        changed[q, i:] = (changed[q, i:] + 7) % 2048  # frame q's groups >= i
        changed[q + 1 :] = (changed[q + 1 :] + 11) % 2048  # every later frame
        after = _logits_for(tiny_loaded, spk, changed, variant)
        same = torch.allclose(after.cp_logits[q, head], base.cp_logits[q, head], rtol=0, atol=1e-6)
        assert same is must_hold, variant
    # and head i must read groups 0..i-1 of its own frame
    base = _logits_for(tiny_loaded, spk, codes)
    earlier = codes.clone()
    earlier[q, i - 1] = (earlier[q, i - 1] + 5) % 2048
    assert not torch.allclose(_logits_for(tiny_loaded, spk, earlier).cp_logits[q, head], base.cp_logits[q, head])


def test_batching_with_padding_changes_nothing(tiny_loaded, spk, generated):
    codes = generated[0]
    a = _example(tiny_loaded, spk, codes)
    b = _example(tiny_loaded, spk, codes[:4], text="A much longer second line, to force padding here.")
    with torch.no_grad():
        alone = align(tiny_loaded.model, [a])
        both = align(tiny_loaded.model, [b, a])
    n_b = 4 + 1
    torch.testing.assert_close(both.talker_logits[n_b:], alone.talker_logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(both.cp_logits[4:], alone.cp_logits, rtol=0, atol=1e-5)


def _overfit(variant: LossVariant, steps: int = 400):
    """Full-parameter Adam on one real utterance; then greedy regeneration."""
    from qtts_sweep.config.loader import load_config

    loaded = modeling.load_model(load_config(["model=tiny"]).model)
    model = loaded.model
    spk = modeling.speaker_embedding(loaded, modeling.load_audio_24k(DEMO_DIR / "ref" / "ref.flac"))
    wav = modeling.load_audio_24k(DEMO_DIR / "wavs" / "demo_0001.flac")
    codes = model.speech_tokenizer.encode(wav, sr=24000).audio_codes[0].cpu().clone()
    role, text_ids = modeling.tokenize_line(loaded.tts, "The kettle is boiling.")
    ex = Example(role, text_ids, codes, spk)
    torch.manual_seed(0)
    model.train()
    params = [p for n, p in model.named_parameters() if not n.startswith("speaker_encoder")]
    opt = torch.optim.Adam(params, lr=3e-3)
    for _ in range(steps):
        out = compute_loss(model, [ex], subtalker_weight=1.0, variant=variant)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    model.eval()
    gen = modeling.generate_codes(
        loaded, ["The kettle is boiling."], spk, max_new_tokens=3 * codes.shape[0], **modeling.GREEDY
    )[0].cpu()
    n = min(gen.shape[0], codes.shape[0])
    match0 = (gen[:n, 0] == codes[:n, 0]).float().sum().item() / codes.shape[0]
    match_all = (gen[:n] == codes[:n]).float().sum().item() / codes.numel()
    return gen.shape[0], codes.shape[0], match0, match_all


@pytest.mark.slow
def test_overfit_regenerates_the_utterance_and_double_shift_does_not():
    frames, truth, match0, match_all = _overfit(LossVariant())
    print(f"\ncorrect loss: {frames} frames (truth {truth}), codebook-0 match {match0:.0%}, all {match_all:.0%}")
    assert frames == truth and match0 == 1.0
    frames, truth, match0, _ = _overfit(LossVariant(double_shift=True))
    print(f"double shift: {frames} frames (truth {truth}), codebook-0 match {match0:.0%}")
    assert frames != truth or match0 < 0.5
