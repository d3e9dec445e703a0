"""Text conditioning the way AUTOMATIC1111 builds it, for any diffusers Stable Diffusion pipeline.

Plain diffusers reads `(masterpiece:1.2)` as the characters "( masterpiece : 1 . 2 )" and truncates at
77 tokens. Users' prompts were written for A1111, so a faithful render of them needs A1111's encoding
(modules/sd_hijack_clip.py, `FrozenCLIPEmbedderWithCustomWordsBase`):
  1. each run of equal weight is tokenized on its own; BREAK closes the current chunk;
  2. tokens are packed into chunks of 75 (a chunk that would overflow ends after a comma within its last 20
     tokens), each wrapped as BOS + 75 + EOS/padding = 77 positions;
  3. each chunk is encoded separately, its hidden states multiplied by the per-token weights, and the
     result rescaled so its mean equals the unweighted mean ("restore mean");
  4. the chunks are concatenated along the sequence axis (cross-attention accepts any length).
The text of each step is read as A1111 reads it (`bridge.syntax.a1111`: tags removed, AND parts, the editing and
alternation schedule, attention); embeddings are read as their name's words (SD1 vectors cannot load in
SD2, and we render SD1.5 from the base model without the user's files). AND parts are encoded one after
another as chunks of one conditioning (A1111 combines them by composable diffusion instead). A batch is padded to one chunk count with empty chunks, for prompts and negative
prompts alike, so classifier-free guidance can stack them.
"""

from __future__ import annotations

from bridge.syntax.a1111 import DEFAULT_STEPS, runs_at
from bridge.syntax.tokens import CHUNK_TOKENS, pack_chunks, token_runs


def weighted_chunks(text: str, tokenizer, negative: bool = False, call: int = 0,
                    steps: int = DEFAULT_STEPS) -> list[tuple[list[int], list[float]]]:
    """A1111 chunks of (token ids, weights) for the sampler's `call`-th model call of `steps`, at most 75 tokens
    each; at least one (possibly empty) chunk. Equal-weight neighbours are tokenized as one run and chunks end at
    a comma when one is near (`pack_chunks`); a negative prompt is read as A1111 reads negatives."""
    comma = _comma_id(tokenizer)
    runs = token_runs(runs_at(text, call, negative, steps),
                      lambda cleaned: tokenizer(cleaned, add_special_tokens=False, verbose=False)["input_ids"])
    return pack_chunks(runs, lambda token: token == comma)


def _comma_id(tokenizer) -> int | None:
    """The id of CLIP's "," token, or None for a vocabulary without it (then no chunk ends early)."""
    token_id = tokenizer.convert_tokens_to_ids(",</w>")
    return token_id if tokenizer.convert_ids_to_tokens(token_id) == ",</w>" else None


def encode_prompts(pipe, texts: list[str], min_chunks: int = 1):
    """Prompt embeddings [batch, 77 * chunks, width] for `texts`, A1111-weighted, on the pipeline's device."""
    return encode_chunks(pipe, [weighted_chunks(t, pipe.tokenizer) for t in texts], min_chunks)


def encode_chunks(pipe, per_text: list[list[tuple[list[int], list[float]]]], min_chunks: int = 1):
    """`encode_prompts` for texts already cut into `weighted_chunks` (callers that needed the chunk counts
    first do not tokenize twice)."""
    import torch

    encoder = pipe.text_encoder
    input_ids, w = chunk_tensors(pipe.tokenizer, per_text, min_chunks, device=pipe.device, dtype=encoder.dtype)
    with torch.inference_mode():
        z = encoder(input_ids)[0]  # [batch * chunks, 77, width]
    return weigh_chunks(z, w, len(per_text))


def chunk_tensors(tok, per_text: list[list[tuple[list[int], list[float]]]], min_chunks: int = 1, device=None,
                  dtype=None):
    """(input ids [batch * chunks, 77], weights [batch * chunks, 77, 1]) of `weighted_chunks` per text, every
    text padded to one chunk count with empty chunks: what the text encoder reads. Apart from `encode_chunks`
    so a toy renderer trains on exactly the conditioning it is served (toyworld.build)."""
    import torch

    n_chunks = max([min_chunks] + [len(c) for c in per_text])
    bos, eos, pad = tok.bos_token_id, tok.eos_token_id, tok.pad_token_id
    ids_rows, weight_rows = [], []
    for chunks in per_text:
        chunks = chunks + [([], [])] * (n_chunks - len(chunks))
        for ids, weights in chunks:
            fill = CHUNK_TOKENS - len(ids)
            # SD1.5 pads with EOS; SD2's tokenizer pads with "!" after one EOS (pad_token_id says which).
            ids_rows.append([bos] + ids + [eos] + [pad] * fill)
            weight_rows.append([1.0] + weights + [1.0] + [1.0] * fill)
    return (torch.tensor(ids_rows, device=device),
            torch.tensor(weight_rows, device=device, dtype=dtype).unsqueeze(-1))


def weigh_chunks(z, w, n_texts: int):
    """The text encoder's output `z` [batch * chunks, 77, width] weighted per token by `w` and each weighted
    chunk's mean restored (A1111's "restore mean"), then each text's chunks concatenated: [batch, 77 * chunks,
    width]. Differentiable, so training and serving share it."""
    import torch

    w = w.to(z.dtype)
    # A1111 restores the mean over the whole batch tensor; per chunk keeps an image independent of
    # which prompts share its batch (bridge.models.render's determinism contract).
    original_mean = z.float().mean(dim=(1, 2), keepdim=True)
    z = z * w
    new_mean = z.float().mean(dim=(1, 2), keepdim=True)
    # Rescale only chunks that carry weights, and never by a ratio of near-zero means (an untrained final
    # LayerNorm, as in the tiny models, centres every token at 0): that ratio is noise, not a correction.
    weighted = (w != 1).any(dim=1, keepdim=True)
    stable = new_mean.abs() > 1e-4 * z.float().abs().mean(dim=(1, 2), keepdim=True)
    # The division only where it is used: a gradient through torch.where's other branch is 0 * inf = NaN where
    # a mean is 0 (training through this, toyworld.build.condition).
    rescale = weighted & stable
    ratio = torch.where(rescale, original_mean / torch.where(rescale, new_mean, 1.0), 1.0)
    z = z * ratio.to(z.dtype)
    return z.reshape(n_texts, -1, z.shape[2])
