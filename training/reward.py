"""Rewards: plain functions `reward(sources, candidates, **columns) -> list[float]` (DESIGN §4).

`ClipAgreementReward` is the real one: for each candidate, the target renders it at the seeds of its
source prompt (through the render cache, so a candidate seen before costs nothing), the scorer embeds the
renders, and the reward is the mean cosine to the stored source embeddings, plus optional terms: the
text-image score of the candidate against the source images (no render), a penalty per 75 tokens over the
target's budget where the renders truncate (plain weighting; A1111 chunking reads past 75 tokens, so
there is no budget to exceed), and a relative length penalty.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from bridge.syntax.tokens import CHUNK_TOKENS

Reward = Callable[..., list[float]]


class ClipAgreementReward:
    def __init__(self, cache, scorer, text_weight: float = 0.0, token_penalty: float = 0.1,
                 length_penalty: float = 0.0, truncates: bool = True):
        self.cache, self.scorer = cache, scorer
        self.text_weight, self.token_penalty, self.length_penalty = text_weight, token_penalty, length_penalty
        self.truncates = truncates

    def __call__(self, sources: Sequence[str], candidates: Sequence[str], *, seeds: Sequence[list[int]],
                 source_embeddings: Sequence[torch.Tensor], negatives: Sequence[str | None], **_) -> list[float]:
        from bridge.syntax.tokens import tokens_between_breaks

        flat_p, flat_s, flat_n, owner = [], [], [], []
        for i, (cand, ss, neg) in enumerate(zip(candidates, seeds, negatives)):
            for s in ss:
                flat_p.append(cand)
                flat_s.append(s)
                flat_n.append(neg)
                owner.append(i)
        emb = self.cache.embeddings(flat_p, flat_s, flat_n)
        per = [[] for _ in candidates]
        for row, (i, k) in enumerate(zip(owner, [j for ss in seeds for j in range(len(ss))])):
            per[i].append(float(torch.nn.functional.cosine_similarity(emb[row], source_embeddings[i][k], dim=0)))
        rewards = [sum(v) / len(v) for v in per]
        if self.text_weight:
            text = self.scorer.embed_texts(list(candidates))
            for i in range(len(candidates)):
                mean_img = torch.nn.functional.normalize(source_embeddings[i].mean(0), dim=0)
                rewards[i] += self.text_weight * float(text[i] @ mean_img)
        for i, cand in enumerate(candidates):
            # Only a render that truncates loses the tokens past 75; A1111 chunking reads them all.
            if self.token_penalty and self.truncates:
                over = sum(max(0, c - CHUNK_TOKENS) for c in tokens_between_breaks(cand))
                rewards[i] -= self.token_penalty * over / CHUNK_TOKENS
            if self.length_penalty:
                rewards[i] -= self.length_penalty * abs(len(cand) - len(sources[i])) / max(1, len(sources[i]))
        return rewards


def word_presence_reward(word: str) -> Reward:
    """A deterministic synthetic reward for tests and sanity checks: 1 when `word` appears, else 0."""
    def reward(sources, candidates, **_) -> list[float]:
        return [float(word in c.lower().split()) for c in candidates]

    return reward
