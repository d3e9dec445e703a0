"""The torch int8 engine (bridge.models.copydecode): drafting from the source changes how many decoder passes a
rewrite takes, never the rewrite; its numbers stay near transformers' fp32 model."""

from __future__ import annotations

import pytest
import torch

from benchmarks.inference_backends import copying_model, real_prompts, rewriter_tokenizer
from bridge.models.copydecode import CopyDecoder, _prompt_start
from bridge.models.rewriter import PREFIX

DIMS = (192, 256, 32, 2, 6)  # d_model, d_ff, d_kv, layers, heads: the smallest shape the copying circuit fits
SYNTAX = ["masterpiece, best quality, (a crimson fox:1.2) in the snow, <lora:fox:0.8>, by greg rutkowski",
          "a red circle BREAK a blue square, [crimson:azure:0.5], ((masterpiece)), best quality, best quality",
          "a", ""]


@pytest.fixture(scope="module")
def tokenizer():
    return rewriter_tokenizer("t5")


@pytest.fixture(scope="module")
def copier(tokenizer):
    return copying_model(DIMS, tokenizer)


@pytest.fixture(scope="module")
def sources(tokenizer):
    prompts = real_prompts(40, seed=7) + SYNTAX
    return [tokenizer(PREFIX + p, truncation=True, max_length=512).input_ids for p in prompts]


def _passes(decoder: CopyDecoder, sources, limit: int, draft: int) -> tuple[list[list[int]], int]:
    """The generated ids, and the decoder passes they took."""
    count = 0
    decode = decoder.decode

    def counted(*args):
        nonlocal count
        count += 1
        return decode(*args)

    decoder.decode = counted
    try:
        return decoder.generate_ids(sources, limit, draft_tokens=draft), count
    finally:
        del decoder.decode


def test_drafting_writes_what_one_token_a_pass_writes_in_fewer_passes(copier, tokenizer, sources):
    decoder = CopyDecoder(copier)
    plain, plain_passes = _passes(decoder, sources, 48, 0)
    for draft in (1, 3, 8):
        ids, passes = _passes(decoder, sources, 48, draft)
        assert ids == plain, draft
        if draft == 8:
            assert passes < plain_passes / 2  # the copies were accepted: it did skip decoder steps
    # The model does copy (else the test above would prove nothing): most rewrites open with their prompt.
    lead = tokenizer(PREFIX, add_special_tokens=False).input_ids
    opens = [ids[:3] == src[_prompt_start(src, lead):][:3] for ids, src in zip(plain, sources)]
    assert sum(opens) >= 0.8 * len(sources)


def test_a_model_that_copies_nothing_is_decoded_the_same_too(tokenizer, sources):
    """Random weights and a plain (relu) feed-forward: drafts are rejected, and the output is still greedy's."""
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(3)
    model = T5ForConditionalGeneration(T5Config(
        vocab_size=len(tokenizer), d_model=64, d_ff=128, d_kv=16, num_layers=2, num_heads=4,
        feed_forward_proj="relu", decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)).eval()
    decoder = CopyDecoder(model)
    assert decoder.generate_ids(sources, 24, draft_tokens=8) == decoder.generate_ids(sources, 24, draft_tokens=0)


def test_int8_stays_near_the_fp32_model(copier, tokenizer, sources):
    """Per position, the engine's logits point where transformers' fp32 logits do (int8 moves them a little),
    and its greedy rewrites are the fp32 model's on most prompts."""
    decoder = CopyDecoder(copier)
    batch = sources[:8]
    ids = torch.zeros(len(batch), max(map(len, batch)), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, s in enumerate(batch):
        ids[i, : len(s)], mask[i, : len(s)] = torch.tensor(s), 1
    target = torch.tensor([[0] + s[1:6] for s in batch])  # a decoder start and five tokens per row
    with torch.inference_mode():
        reference = copier(input_ids=ids, attention_mask=mask, decoder_input_ids=target).logits
        cross, pad = decoder.encode(ids, mask)
        cache = [tuple(torch.zeros(len(batch), decoder.heads, 8, decoder.d_kv, dtype=torch.float64) for _ in "kv")
                 for _ in decoder.decoder]
        ours = decoder.decode(target, torch.zeros(len(batch), dtype=torch.long), cache, cross, pad)
    cosine = torch.nn.functional.cosine_similarity(ours.flatten(0, 1), reference.flatten(0, 1), dim=-1)
    assert cosine.min() > 0.99
    assert (ours.argmax(-1) == reference.argmax(-1)).float().mean() > 0.95
    with torch.inference_mode():
        fp32 = [row[1:].tolist() for row in copier.generate(input_ids=ids, attention_mask=mask, max_new_tokens=16,
                                                               do_sample=False, num_beams=1)]
    int8 = decoder.generate_ids(batch, 16)
    same = sum(a[: len(b)] == b[: len(a)] for a, b in zip(fp32, int8))
    assert same >= 6, (fp32, int8)


def test_sampling_follows_its_seed_and_beam_search_is_refused(copier, tokenizer):
    decoder = CopyDecoder(copier)
    texts = [PREFIX + "a crimson fox in the snow", PREFIX + "masterpiece, a castle at dusk"]

    def sample(seed):
        return decoder.generate_batches(tokenizer, [(texts, 16, seed)], num_candidates=2, sample=True,
                                        temperature=3.0, prefix=PREFIX)

    assert sample(1) == sample(1)
    assert sample(1) != sample(2)
    with pytest.raises(ValueError, match="greedily or by sampling"):
        decoder.generate_batches(tokenizer, [(texts, 16, 0)], num_candidates=2, sample=False, prefix=PREFIX)


@pytest.mark.parametrize("prompt", ["portrait of a cowboy", "a cow", "(a castle:1.2), dusk", "🔥 art"])
def test_the_first_draft_starts_where_the_prompt_does(tokenizer, prompt):
    """SentencePiece cuts the prefix's trailing space into a piece of its own that then joins the prompt's
    first word, so the prompt starts at the prefix's pieces but one, or where they stop matching."""
    ids = tokenizer(PREFIX + prompt).input_ids
    lead = tokenizer(PREFIX, add_special_tokens=False).input_ids
    start = _prompt_start(ids, lead)
    assert tokenizer.decode(ids[start:], skip_special_tokens=True).strip() == tokenizer.decode(
        tokenizer(prompt).input_ids, skip_special_tokens=True).strip()


def test_the_compute_bound_counts_what_the_model_multiplies():
    """`multiply_adds` from flan-t5-small's shape, against the same count read off a model of that shape: every
    linear weight once per token that passes through it, and attention at the lengths given."""
    from transformers import T5Config, T5ForConditionalGeneration

    from benchmarks.inference_backends import SHAPES, VOCAB, multiply_adds

    d, f, d_kv, layers, heads = SHAPES["flan-t5-small"]
    model = T5ForConditionalGeneration(T5Config(
        vocab_size=VOCAB, d_model=d, d_ff=f, d_kv=d_kv, num_layers=layers, num_decoder_layers=layers,
        num_heads=heads, feed_forward_proj="gated-gelu", tie_word_embeddings=False))

    def linear(module) -> int:
        return sum(m.weight.numel() for m in module.modules() if isinstance(m, torch.nn.Linear))

    # cross-attention keys and values: once per source token; every other decoder weight once per generated token
    cross_kv = sum(b.layer[1].EncDecAttention.k.weight.numel() + b.layer[1].EncDecAttention.v.weight.numel()
                   for b in model.decoder.block)
    source, generated, inner = 40, 9, heads * d_kv
    attention = 2 * inner * layers * (source * source + generated * source + generated * (generated + 1) / 2)
    want = ((linear(model.encoder) + cross_kv) * source
            + (linear(model.decoder) - cross_kv + linear(model.lm_head)) * generated + attention)
    work = multiply_adds("flan-t5-small", source, generated)
    assert work["full_g"] == pytest.approx(want / 1e9, rel=1e-9)
    one = multiply_adds("flan-t5-small", source, 1)
    assert work["one_token_g"] == pytest.approx(one["full_g"], rel=1e-9)
    assert one["share_bound"] == pytest.approx(1.0)
    assert 0 < work["share_bound"] < multiply_adds("flan-t5-small", source, 5)["share_bound"] < 1
