"""The gathered dataset as training groups: one per prompt, with its seeds and stored source embeddings.

Source images are never rendered again: the reward compares target renders with these embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from training.config import TrainConfig

REQUIRED = ("prompt", "negative_prompt", "seed", "prompt_index", "embedding", "scorer", "preset")


@dataclass
class PromptGroup:
    prompt: str
    negative_prompt: str | None
    seeds: list[int]
    embeddings: "torch.Tensor"  # noqa: F821 - [seeds, D] source image embeddings


def load_groups(data_dir: Path, scorer: str, max_seeds: int | None = None) -> tuple[list[PromptGroup], dict]:
    """Read a `sd-bridge gather` dataset; check it carries what training needs and matches the scorer."""
    import datasets
    import torch

    if not (Path(data_dir) / "state.json").is_file():
        raise FileNotFoundError(f"{data_dir} is not a gathered dataset (no state.json); run `sd-bridge gather` "
                                "first (an interrupted gather: rerun it to finish)")
    ds = datasets.load_from_disk(str(data_dir))
    missing = [c for c in REQUIRED if c not in ds.column_names]
    if missing:
        raise ValueError(f"{data_dir} lacks column(s) {missing}; it was not written by `sd-bridge gather`")
    cols = ds.select_columns(list(REQUIRED)).to_dict()
    scorers = set(cols["scorer"])
    if scorers != {scorer}:
        raise ValueError(f"{data_dir} holds embeddings from scorer {sorted(scorers)}, but --scorer is {scorer!r}: "
                         "CLIP spaces of different scorers are not comparable")
    by_prompt: dict[int, PromptGroup] = {}
    for prompt, neg, seed, idx, emb in zip(cols["prompt"], cols["negative_prompt"], cols["seed"],
                                           cols["prompt_index"], cols["embedding"]):
        g = by_prompt.setdefault(idx, PromptGroup(prompt, neg, [], []))
        if max_seeds is None or len(g.seeds) < max_seeds:
            g.seeds.append(int(seed))
            g.embeddings.append(emb)
    groups = [PromptGroup(g.prompt, g.negative_prompt, g.seeds, torch.tensor(g.embeddings, dtype=torch.float32))
              for _, g in sorted(by_prompt.items())]
    if not groups:
        raise ValueError(f"{data_dir} has no rows")
    return groups, {"source": sorted(set(cols["preset"])), "rows": len(ds), "prompts": len(groups)}


def policy_inputs(cfg: TrainConfig, groups) -> tuple[list[str], list[str | None]]:
    """Prompts and negative prompts after the syntax strategy, exactly as the Translator (eval, serving)
    processes them: the policy's rewriting of the prompt is what the rewriter sees, and candidates are
    rendered with the processed negative, as they will be once served."""
    from bridge.syntax.policy import MigrationPolicy, apply_policy

    policy = MigrationPolicy.of(cfg)
    network_map = policy.load_network_map()
    prompts = [apply_policy(g.prompt, policy, network_map).prompt for g in groups]
    negatives = [apply_policy(g.negative_prompt, policy, network_map).prompt if g.negative_prompt is not None
                 else None for g in groups]
    return prompts, negatives
