"""Held-out agreement during training (`--val-data`): the second line of the learning curves.

When the optimisation phase starts and at every checkpoint, the model translates the validation prompts as
they will be served (through `Translator`: the policy, greedy rewriting, the structure check and the
fallback), the target renders the translations at the validation dataset's seeds through the
run's render cache, and the agreement is the mean cosine to the stored source embeddings: the number
`sd-bridge eval` reports, on prompts the run never trains on. Identity (the prompts as they are) is measured
once, as the line to beat.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from bridge.syntax.policy import MigrationPolicy
from training.config import TrainConfig


class Validator:
    def __init__(self, cfg: TrainConfig, cache, train_prompts: list[str]):
        from bridge.models.rewriter import prompt_hash
        from training.data import load_groups
        from training.data import policy_inputs

        self.groups, _ = load_groups(cfg.val_data, cfg.scorer, cfg.reward_seeds)
        trained = {prompt_hash(p) for p in train_prompts}
        seen = [g.prompt for g in self.groups if prompt_hash(g.prompt) in trained]
        if seen:
            raise ValueError(f"--val-data: {len(seen)} of {len(self.groups)} validation prompts are also training "
                             f"prompts (first: {seen[0][:80]!r}); gather the validation set from held-out prompts")
        self.inputs, self.negatives = policy_inputs(cfg, self.groups)
        self.cfg, self.cache = cfg, cache
        self.identity = self.agreement(self.inputs, self.negatives)

    def agreement(self, texts: list[str], negatives: list[str | None]) -> float:
        flat = [(i, s) for i, g in enumerate(self.groups) for s in g.seeds]
        emb = self.cache.embeddings([texts[i] for i, _ in flat], [s for _, s in flat],
                                    [negatives[i] for i, _ in flat])
        src = torch.cat([g.embeddings for g in self.groups]).to(emb.device)
        return float(torch.nn.functional.cosine_similarity(emb, src, dim=-1).mean())

    def __call__(self, model, tokenizer, meta) -> dict:
        """Translate the validation prompts through the serving path (`Translator`) with the model as it is."""
        from bridge.models import presets
        from bridge.translator import Translator

        was_training = model.training
        model.eval()
        # The guard off: its edit record is written when training ends, so the curve follows the rewriter;
        # eval measures what the guard costs on the finished adapter.
        policy = replace(MigrationPolicy.of(self.cfg), faithfulness="off")
        tr = Translator(presets.pipeline(self.cfg.target), policy, model, tokenizer, meta)
        res = tr.translate([g.prompt for g in self.groups], [g.negative_prompt for g in self.groups])
        model.train(was_training)
        texts = [r.translated_prompt for r in res]
        return {"val_agreement": self.agreement(texts, [r.translated_negative_prompt for r in res]),
                "val_identity": self.identity, "val_fallbacks": sum(r.fallback for r in res),
                "val_prompts": len(texts)}
