"""`TrainConfig`: every knob of `sd-bridge train`, documented once; defaults reproduce the reference run
(SD1.5 data -> SD2-base, flan-t5-base rewriter, ViT-H-14 scorer, GRPO with K=4)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from bridge.config import json_summary_field
from bridge.models import presets
from bridge.syntax.policy import MigrationPolicy


@dataclass
class TrainConfig(MigrationPolicy):
    """Train a LoRA on the rewriter so the target's renders of its rewrites agree with the stored source images."""

    # The guard checks served rewrites; this command serves none (its validation curve runs unguarded).
    faithfulness: Literal["strict", "lenient", "off"] = field(default="strict", metadata={"cli": False})

    data: Path | None = field(default=None, metadata={"help": "gathered dataset directory (sd-bridge gather --out)"})
    out: Path | None = field(default=None, metadata={"help": "output adapter directory"})
    target: str = field(default=presets.DEFAULT_TARGET, metadata={"help": "target pipeline preset"})
    rewriter: str = field(default=presets.DEFAULT_REWRITER, metadata={"help": "rewriter preset (flan-t5-*, tiny-t5)"})
    scorer: str = field(default=presets.DEFAULT_SCORER, metadata={"help": "scorer preset; must be the one the "
                                                                          "dataset's embeddings were made with"})
    algo: Literal["grpo", "raft"] = field(default="grpo", metadata={
        "help": "grpo: group-relative policy gradient; raft: best-of-K reward-ranked fine-tuning"})
    steps: int = field(default=200, metadata={"help": "optimisation steps after the warm start"})
    prompts_per_step: int = field(default=8, metadata={"help": "prompts per step (across all processes)"})
    k: int = field(default=4, metadata={"help": "candidates sampled per prompt (the group)"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature"})
    lr: float = field(default=1e-4, metadata={"help": "AdamW learning rate"})
    clip_eps: float = field(default=0.2, metadata={"help": "PPO-style ratio clip (grpo)"})
    kl_coef: float = field(default=0.05, metadata={
        "help": "KL penalty to the frozen warm-started adapter (the base model when there is no warm start)"})
    updates_per_step: int = field(default=1, metadata={
        "help": "optimisation passes over each rollout; the PPO clip only acts from the second pass on (with 1, "
                "grpo is REINFORCE with a group baseline plus KL)"})
    advantage: Literal["std", "mean"] = field(default="std", metadata={
        "help": "grpo's advantage: std (reward minus the group mean, over the group's sample std) or mean (minus "
                "the group mean only, as Dr. GRPO)"})
    # Measured against the render-noise floor (benchmarks/render_noise.py): 0.001 is about the 10th percentile of the
    # reward's sample std over same-meaning rewrites, 0.05 the 90th. Three training seeds each on the toy world
    # (benchmarks/toyworld_learning.py --seeds 0,1,2): 0.001 recovered more of the gap, and alike on every seed,
    # than 0.05, which zeroes groups whose only good candidate gains little; so it stays the default.
    min_group_std: float = field(default=1e-3, metadata={
        "help": "groups whose reward std is below this get zero advantage with --advantage std (their "
                "differences are render noise); raft fine-tunes only on a best candidate that beats the prompt "
                "as written by more than this"})
    fallback_penalty: float = field(default=0.05, metadata={
        "help": "a candidate whose structure does not read back is scored as what it would be served as (the "
                "prompt as written) minus this, so its sampled tokens are pushed down"})
    preserve_penalty: float = field(default=0.0, metadata={
        "help": "subtracted from a candidate's reward per content word it drops or adds (function words aside; "
                "in the negative too with --rewrite-negative): a renderer is indifferent to many words a person "
                "wrote on purpose, and without a cost the reward lets the adapter delete or invent them (#40)"})
    format: Literal["flat", "marked", "leaf"] = field(default="flat", metadata={
        "help": "flat: the model reads the prompt's words without its syntax, and its answer goes back into the "
                "leaves by a word alignment; marked: the whole prompt, leaves numbered, one output per leaf; "
                "leaf: each leaf alone, without context (the format of older adapters)"})
    rewrite_negative: bool = field(default=False, metadata={
        "help": "rewrite negative prompts too (their text leaves, with the negative task prefix); an empty "
                "negative stays empty"})
    warm_start_steps: int = field(default=100, metadata={"help": "SFT steps towards identity before optimising"})
    warm_start_pairs: Path | None = field(default=None, metadata={
        "help": "JSONL of {source, target} rewrites added to the identity warm start"})
    warm_start_batch: int = field(default=16, metadata={"help": "leaves per warm-start step"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha"})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout"})
    lora_targets: list[str] = field(default_factory=lambda: ["q", "k", "v", "o"], metadata={
        "help": "module names that get LoRA (T5 attention: q k v o; feed-forward: wi_0 wi_1 wo)"})
    reward_seeds: int | None = field(default=None, metadata={"help": "seeds per prompt used in the reward "
                                                                      "(default: all the dataset has)"})
    text_weight: float = field(default=0.0, metadata={"help": "weight of the text-image term (candidate text vs "
                                                               "source image; no render)"})
    token_penalty: float = field(default=0.1, metadata={
        "help": "penalty per 75 tokens over the target's budget; applies only where renders truncate (plain "
                "weighting): A1111 chunking reads past 75 tokens, so with it nothing is over budget"})
    length_penalty: float = field(default=0.0, metadata={"help": "penalty on relative length change"})
    max_new_tokens: int | None = field(default=None, metadata={
        "help": "hard cap on generated tokens per leaf (default: at least the preset's, grown to twice the "
                "leaf's length plus 8)"})
    micro_batch: int = field(default=64, metadata={"help": "leaf sequences per forward/backward pass (memory); "
                                                            "gradients accumulate over a step's micro-batches"})
    val_data: Path | None = field(default=None, metadata={
        "help": "gathered dataset of held-out prompts: agreement on it is measured when optimisation starts and at "
                "every checkpoint, and drawn in learning_curves.png"})
    render_batch: int = field(default=4, metadata={"help": "images per target pipeline call"})
    cache_dir: Path | None = field(default=None, metadata={"help": "render cache (default: OUT/render-cache)"})
    checkpoint_every: int = field(default=50, metadata={"help": "save a checkpoint every N steps"})
    resume: str | None = field(default=None, metadata={"help": "'latest' or a checkpoint directory to resume from"})
    seed: int = field(default=0, metadata={"help": "seed of every random stream (data order, sampling, dropout)"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda, cuda:N"})
    tensorboard: bool = field(default=False, metadata={"help": "also log to OUT/tensorboard"})
    push_to_hub: str | None = field(default=None, metadata={"help": "hub repo id to push the adapter to"})
    dry_run: bool = field(default=False, metadata={"help": "print the generations/renders this run will make "
                                                           "and an estimated time; train nothing"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar", "off_help": "no progress bar (for logs)"})
    json: bool = json_summary_field()

    def __post_init__(self):
        super().__post_init__()
        self.write_a1111("train")
        if self.data is None:
            raise ValueError("--data is required (a dataset written by `sd-bridge gather`)")
        if self.out is None and not self.dry_run:
            raise ValueError("--out is required (the adapter directory)")
        self.data = Path(self.data)
        self.out = Path(self.out) if self.out is not None else None
        self.val_data = Path(self.val_data) if self.val_data is not None else None
        if self.val_data is not None and not (self.val_data / "state.json").is_file():
            raise ValueError(f"--val-data {self.val_data} is not a gathered dataset (no state.json); gather the "
                             "held-out prompts with `sd-bridge gather` first")
        for name in ("steps", "prompts_per_step", "k", "lora_r", "updates_per_step", "warm_start_batch",
                     "checkpoint_every", "render_batch", "micro_batch"):
            if getattr(self, name) < (0 if name == "steps" else 1):
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("min_group_std", "fallback_penalty", "preserve_penalty"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.advantage not in ("std", "mean"):
            raise ValueError(f"advantage must be std or mean, got {self.advantage!r}")
        if self.warm_start_steps < 0:
            raise ValueError("warm_start_steps must be >= 0")
        if self.algo == "grpo" and self.k < 2:
            raise ValueError("grpo needs k >= 2: advantages are relative to the group")
        if not self.lora_targets:
            raise ValueError("lora_targets must name at least one module")
        presets.pipeline(self.target)
        presets.rewriter(self.rewriter)
        presets.scorer(self.scorer)
