"""An int8 T5 rewriter that decodes greedily with the source as its draft (#44): what a torch int8 export runs.

A translation keeps most of its prompt word for word, and one greedy decoder step for a batch of 32 is a
chain of small matrix products the CPU runs far below its peak. So each step here *proposes* the next
`draft_tokens` tokens by copying them from the source, runs the decoder once over all of them, and keeps
the longest run the model itself would have chosen plus the model's own next token: prompt-lookup
decoding (transformers' `PromptLookupCandidateGenerator`, its `prompt_lookup_num_tokens`), batched, with
each row at its own length. A step that accepts nothing still yields the model's next token, so the output
is the greedy output whatever the draft was; only the number of decoder passes changes.

That holds exactly because every row is computed the same way whatever else is in its pass:
- Linear layers are int8 products with int32 accumulation (`torch._int_mm`: AMX/VNNI on x86) of weights
  quantized per output channel and activations quantized per row (per token), so a row's result does not
  depend on how many rows or draft tokens share the product (integer sums do not depend on their order;
  torch's own dynamic quantization scales activations per tensor, so a row's rewrite there changes with its
  neighbours). ctranslate2 also quantizes activations per row.
- Attention scores, softmax and their weighted sums run in float64: a sum over a different number of masked
  positions then moves the result far below float32's resolution.
`tests/models/test_copydecode.py` checks byte-identity against the same engine with no draft, and closeness
to transformers' fp32 greedy output.

The model follows transformers' T5 (`modeling_t5.py`): RMS layer norm without bias, unscaled attention with
a bucketed relative-position bias from the first layer of each stack, gated or plain feed-forward, the
decoder output scaled by d_model**-0.5 when the embeddings are tied (`scale_decoder_outputs`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

VERSION = 1  # in the translation-cache key of a torch int8 export: a change here that moves a rewrite bumps it
# Tokens drafted per pass (transformers' prompt_lookup_num_tokens defaults to 10). Chosen with
# `benchmarks.inference_backends --draft-tokens K` on a flan-t5-base-shaped copying rewriter: 4, 8 and 16 all cut
# the passes by more than half; 8 took the least time, 16 accepts few more tokens and pays for wider passes.
DRAFT_TOKENS = 8
_NEG = float("-inf")


class Int8Linear:
    """y = x W^T with W int8 per output channel and x int8 per row, accumulated in int32."""

    def __init__(self, weight: torch.Tensor):
        weight = weight.detach().float()
        self.scale = (weight.abs().amax(dim=1).clamp(min=1e-12) / 127.0)  # (N,)
        self.weight_t = torch.round(weight / self.scale[:, None]).to(torch.int8).t()  # (K, N) view
        self.out_features = weight.shape[0]

    def __call__(self, x: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        rows = x.shape[0]
        row_scale = x.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / 127.0
        xq = torch.round(x / row_scale).to(torch.int8)
        if rows < 17:  # _int_mm on the CPU wants more than 16 rows; padding rows leaves the others unchanged
            xq = torch.cat([xq, xq.new_zeros(17 - rows, xq.shape[1])])
        out = torch._int_mm(xq, self.weight_t)[:rows].to(dtype)
        return out.mul_(row_scale).mul_(self.scale).reshape(*shape[:-1], self.out_features)


def _rms(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    # (a reduction over the model width, the same length for every row: the same sums whatever the batch)
    return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def _bucket(relative: torch.Tensor, bidirectional: bool, buckets: int, max_distance: int) -> torch.Tensor:
    """transformers' T5Attention._relative_position_bucket (from Mesh TensorFlow)."""
    out = torch.zeros_like(relative)
    if bidirectional:
        buckets //= 2
        out += (relative > 0).long() * buckets
        relative = relative.abs()
    else:
        relative = -torch.clamp(relative, max=0)
    exact = buckets // 2
    large = exact + (torch.log(relative.float().clamp(min=1) / exact) / math.log(max_distance / exact)
                     * (buckets - exact)).long()
    large = torch.clamp(large, max=buckets - 1)
    return out + torch.where(relative < exact, relative, large)


def _attend(q, k, v, bias, exact: bool = True):
    """q (B,H,T,d), k/v (B,H,L,d), bias broadcast to (B,H,T,L) with -inf where masked -> (B,T,H*d) float32.
    `exact`: in float64, so that a row's result does not move with T or L (the decoder's passes); the encoder
    runs once per source and attends in float32."""
    if exact:  # (k and v are float64 already: the decoder's caches)
        scores = torch.matmul(q, k.transpose(-1, -2)) + bias
        ctx = torch.matmul(torch.softmax(scores, dim=-1), v).float()
    else:
        ctx = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=1.0)
    b, h, t, d = ctx.shape
    return ctx.transpose(1, 2).reshape(b, t, h * d)


@dataclass
class _Layer:
    ln_self: torch.Tensor
    qkv: Int8Linear
    o: Int8Linear
    ln_ff: torch.Tensor
    wi: Int8Linear  # wi_0 and wi_1 side by side when gated
    wo: Int8Linear
    ln_cross: torch.Tensor | None = None
    cross_q: Int8Linear | None = None
    cross_o: Int8Linear | None = None


class CopyDecoder:
    """A merged T5ForConditionalGeneration as int8 tensors, driven by `bridge.models.rewriter.generate` through
    `generate_batches`, like `bridge.models.engine.Ct2Rewriter`."""

    def __init__(self, model, draft_tokens: int = DRAFT_TOKENS):
        cfg = model.config
        self.config = cfg
        self.draft_tokens = draft_tokens
        self.heads, self.d_kv, self.eps = cfg.num_heads, cfg.d_kv, cfg.layer_norm_epsilon
        self.gated = cfg.is_gated_act
        self.act = {"gelu_new": _gelu_new, "relu": torch.relu, "gelu": torch.nn.functional.gelu}[cfg.dense_act_fn]
        self.scale_out = getattr(cfg, "scale_decoder_outputs", cfg.tie_word_embeddings)
        self.buckets, self.max_distance = cfg.relative_attention_num_buckets, cfg.relative_attention_max_distance
        self.embed = model.shared.weight.detach().float().clone()
        self.inner = self.heads * self.d_kv
        self.encoder = [self._layer(block, cross=False) for block in model.encoder.block]
        self.decoder = [self._layer(block, cross=True) for block in model.decoder.block]
        self.enc_bias = model.encoder.block[0].layer[0].SelfAttention.relative_attention_bias.weight.detach().double()
        self.dec_bias = model.decoder.block[0].layer[0].SelfAttention.relative_attention_bias.weight.detach().double()
        self.enc_final = model.encoder.final_layer_norm.weight.detach().float().clone()
        self.dec_final = model.decoder.final_layer_norm.weight.detach().float().clone()
        # Every layer's cross-attention keys and values from the encoder output in one product.
        self.cross_kv = Int8Linear(torch.cat([
            torch.cat([b.layer[1].EncDecAttention.k.weight, b.layer[1].EncDecAttention.v.weight])
            for b in model.decoder.block]))
        self.lm_head = Int8Linear(model.lm_head.weight)
        self.start, self.eos = cfg.decoder_start_token_id, cfg.eos_token_id

    def _layer(self, block, cross: bool) -> _Layer:
        att = block.layer[0].SelfAttention
        ff = block.layer[-1].DenseReluDense
        wi = torch.cat([ff.wi_0.weight, ff.wi_1.weight]) if self.gated else ff.wi.weight
        layer = _Layer(block.layer[0].layer_norm.weight.detach().float().clone(),
                       Int8Linear(torch.cat([att.q.weight, att.k.weight, att.v.weight])), Int8Linear(att.o.weight),
                       block.layer[-1].layer_norm.weight.detach().float().clone(), Int8Linear(wi), Int8Linear(ff.wo.weight))
        if cross:
            x = block.layer[1]
            layer.ln_cross = x.layer_norm.weight.detach().float().clone()
            layer.cross_q, layer.cross_o = Int8Linear(x.EncDecAttention.q.weight), Int8Linear(x.EncDecAttention.o.weight)
        return layer

    def _ff(self, layer: _Layer, h: torch.Tensor) -> torch.Tensor:
        x = _rms(h, layer.ln_ff, self.eps)
        if self.gated:
            gate, lin = layer.wi(x).chunk(2, dim=-1)
            return h + layer.wo(self.act(gate) * lin)
        return h + layer.wo(self.act(layer.wi(x)))

    def _split(self, x: torch.Tensor) -> torch.Tensor:  # (B,T,H*d) -> (B,H,T,d)
        b, t, _ = x.shape
        return x.view(b, t, self.heads, self.d_kv).transpose(1, 2)

    def encode(self, ids: torch.Tensor, mask: torch.Tensor):
        """Per decoder layer, the cross-attention keys and values (B,H,S,d), and the additive source mask."""
        b, s = ids.shape
        h = self.embed[ids]
        pos = torch.arange(s)
        bias = self.enc_bias[_bucket(pos[None, :] - pos[:, None], True, self.buckets, self.max_distance)]
        pad = torch.where(mask.bool(), 0.0, _NEG).double()[:, None, None, :]
        bias = (bias.permute(2, 0, 1)[None] + pad).float()
        for layer in self.encoder:
            q, k, v = layer.qkv(_rms(h, layer.ln_self, self.eps)).split(self.inner, dim=-1)
            h = h + layer.o(_attend(self._split(q), self._split(k), self._split(v), bias, exact=False))
            h = self._ff(layer, h)
        h = _rms(h, self.enc_final, self.eps)
        kv = self.cross_kv(h, torch.float64).split(self.inner, dim=-1)  # float64 once, for the decoder's exact attention
        return [(self._split(kv[2 * i]).contiguous(), self._split(kv[2 * i + 1]).contiguous())
                for i in range(len(self.decoder))], pad

    def decode(self, tokens: torch.Tensor, start: torch.Tensor, cache: list, cross: list, pad: torch.Tensor):
        """Logits (B,T,V) for `tokens` (B,T), row b's first at position start[b]; writes their self-attention keys
        and values into `cache` (per layer (B,H,L,d) float64 pairs) at those positions."""
        b, t = tokens.shape
        h = self.embed[tokens]
        qpos = start[:, None] + torch.arange(t)[None, :]  # (B,T)
        length = int(qpos.max()) + 1
        kpos = torch.arange(length)
        rel = kpos[None, None, :] - qpos[:, :, None]  # (B,T,L)
        bias = self.dec_bias[_bucket(rel, False, self.buckets, self.max_distance)].permute(0, 3, 1, 2)
        bias = bias.masked_fill((rel > 0)[:, None], _NEG)
        rows = torch.arange(b)[:, None].expand(b, t)
        for layer, (keys, values), (ck, cv) in zip(self.decoder, cache, cross):
            q, k, v = layer.qkv(_rms(h, layer.ln_self, self.eps)).double().split(self.inner, dim=-1)
            keys[rows, :, qpos] = k.reshape(b, t, self.heads, self.d_kv)
            values[rows, :, qpos] = v.reshape(b, t, self.heads, self.d_kv)
            h = h + layer.o(_attend(self._split(q), keys[:, :, :length], values[:, :, :length], bias))
            x = _rms(h, layer.ln_cross, self.eps)
            h = h + layer.cross_o(_attend(self._split(layer.cross_q(x).double()), ck, cv, pad))
            h = self._ff(layer, h)
        h = _rms(h, self.dec_final, self.eps)
        if self.scale_out:
            h = h * self.config.d_model ** -0.5
        return self.lm_head(h)

    @torch.inference_mode()
    def generate_ids(self, sources: list[list[int]], max_new_tokens: int, skip: list[int] | None = None,
                     draft_tokens: int | None = None,
                     sample: bool = False, temperature: float = 1.0, generator: torch.Generator | None = None
                     ) -> list[list[int]]:
        """Generated ids per source (the EOS kept when the row ended). Greedy rows draft from their source, the
        first `skip[i]` tokens of row i (the task prefix) left out of its first draft; sampling decodes one token a
        step."""
        k = 0 if sample else (self.draft_tokens if draft_tokens is None else draft_tokens)
        n, longest = len(sources), max(len(s) for s in sources)
        ids = torch.zeros(n, longest, dtype=torch.long)
        mask = torch.zeros(n, longest, dtype=torch.long)
        for i, s in enumerate(sources):
            ids[i, : len(s)] = torch.tensor(s)
            mask[i, : len(s)] = 1
        cross, pad = self.encode(ids, mask)
        room = max_new_tokens + k + 1
        cache = [(torch.zeros(n, self.heads, room, self.d_kv, dtype=torch.float64),
                  torch.zeros(n, self.heads, room, self.d_kv, dtype=torch.float64)) for _ in self.decoder]
        out: list[list[int]] = [[] for _ in sources]
        rows = list(range(n))  # the source of each batch row
        running = [True] * n  # per batch row: still writing (a finished row rides along until the batch shrinks)
        last = torch.full((n,), self.start, dtype=torch.long)
        start = torch.zeros(n, dtype=torch.long)
        pointer = list(skip or [0] * n)  # where each row's copy of its source has got to
        while any(running):
            drafts = [self._draft(sources[r], out[r], pointer[j], min(k, max_new_tokens - len(out[r]) - 1))
                      if running[j] else [] for j, r in enumerate(rows)]
            tokens = torch.zeros(len(rows), 1 + max(len(d) for d in drafts), dtype=torch.long)
            tokens[:, 0] = last
            for j, d in enumerate(drafts):
                tokens[j, 1 : 1 + len(d)] = torch.tensor(d, dtype=torch.long)
            logits = self.decode(tokens, start, cache, cross, pad)
            if sample:
                probs = torch.softmax(logits[:, 0].double() / temperature, dim=-1)
                chosen = torch.multinomial(probs, 1, generator=generator).tolist()
            else:
                chosen = logits.argmax(dim=-1).tolist()
            for j, r in enumerate(rows):
                if not running[j]:
                    continue
                d, picks = drafts[j], chosen[j]
                accepted = 0
                while accepted < len(d) and picks[accepted] == d[accepted]:
                    accepted += 1
                new = d[:accepted] + [picks[accepted]]  # the drafts the model agrees with, then its own next token
                if self.eos in new:
                    new = new[: new.index(self.eos) + 1]
                out[r].extend(new)
                pointer[j] = self._advance(sources[r], pointer[j], new)
                start[j] += len(new)
                last[j] = new[-1]
                running[j] = new[-1] != self.eos and len(out[r]) < max_new_tokens
            # Finished rows leave once half the batch has finished: a pass reads every weight whatever its rows,
            # so a few idle rows cost little, while dropping rows copies every cache.
            if sum(running) <= len(rows) // 2:
                keep = [j for j in range(len(rows)) if running[j]]
                index = torch.tensor(keep, dtype=torch.long)
                rows, running = [rows[j] for j in keep], [True] * len(keep)
                pointer = [pointer[j] for j in keep]
                last, start, pad = last[index], start[index], pad[index]
                cache = [(a[index], b[index]) for a, b in cache]
                cross = [(a[index], b[index]) for a, b in cross]
        return out

    @staticmethod
    def _draft(source: list[int], written: list[int], pointer: int, k: int) -> list[int]:
        """Up to `k` tokens the row will probably write next: what follows, in the source, the longest tail of
        what it wrote (3 tokens down to 1) that the source holds, the occurrence nearest its copy pointer;
        else the source from the pointer on (a word replaced by one of the same length)."""
        if k <= 0:
            return []
        for size in (3, 2, 1):
            if len(written) < size:
                continue
            tail = written[-size:]
            hits = [i + size for i in range(len(source) - size + 1) if source[i : i + size] == tail]
            if hits:
                at = min(hits, key=lambda i: abs(i - pointer))
                return source[at : at + k]
        return source[pointer : pointer + k]

    @staticmethod
    def _advance(source: list[int], pointer: int, new: list[int]) -> int:
        """The copy pointer after `new` was written: past the source's next occurrence of its last token near the
        pointer, else one step per token (a substitution)."""
        tail = new[-1]
        for i in range(max(0, pointer - 2), min(len(source), pointer + len(new) + 4)):
            if source[i] == tail:
                return i + 1
        return min(len(source), pointer + len(new))

    def generate_batches(self, tokenizer, batches: list[tuple[list[str], int, int]], num_candidates: int = 1,
                         sample: bool = False, temperature: float = 1.0, prefix: str = "") -> list[list[list[int]]]:
        """`bridge.models.engine.Ct2Rewriter.generate_batches`: per (texts, max_new_tokens, seed) batch,
        `num_candidates` rows of generated ids per text. Greedy or sampled; beam search is not here."""
        if num_candidates > 1 and not sample:
            raise ValueError("a torch int8 export decodes greedily or by sampling: several candidates need --sample "
                             "(or the adapter itself, or a ctranslate2 export, for beam search)")
        lead = tokenizer(prefix, add_special_tokens=False).input_ids if prefix else []
        rows = []
        for texts, limit, seed in batches:
            enc = tokenizer(list(texts), truncation=True, max_length=512).input_ids
            sources = [ids for ids in enc for _ in range(num_candidates)]
            generator = torch.Generator().manual_seed(seed) if sample else None
            rows.append(self.generate_ids(sources, limit, skip=[_prompt_start(ids, lead) for ids in sources],
                                          sample=sample, temperature=temperature, generator=generator))
        return rows


def _prompt_start(ids: list[int], lead: list[int]) -> int:
    """Where the prompt begins in `ids`, the tokens of the task prefix + prompt: after the prefix's tokens it shares,
    less its last (SentencePiece cuts "...2: " into "2", ":", "▁" alone, and the "▁" joins the prompt's first word)."""
    shared = 0
    while shared < min(len(ids), len(lead)) and ids[shared] == lead[shared]:
        shared += 1
    return min(shared, max(len(lead) - 1, 0))


def _gelu_new(x: torch.Tensor) -> torch.Tensor:
    """transformers' NewGELUActivation (the tanh approximation flan-t5 uses), as one kernel."""
    return torch.nn.functional.gelu(x, approximate="tanh")
