"""What a finished run says about itself: the summary of its per-step log, the model card (README.md beside
the adapter, as peft and trl write one) and the optional push to the hub. Apart from the trainer, which
holds the algorithm only (trl keeps `create_model_card` apart from its trainers in the same way)."""

from __future__ import annotations

import math
from pathlib import Path

from bridge.models import presets
from training.config import TrainConfig
from training.curves import LOG


def summarise_log(path: Path) -> dict:
    from training.curves import read_log

    rows, val = read_log(path)
    rl = [r for r in rows if r.get("reward_mean") is not None]
    tail = rl[-max(1, len(rl) // 10):] if rl else []
    return {"steps": len(rows), "rl_steps": len(rl), "reward_first": rl[0]["reward_mean"] if rl else None,
            "val_identity": val[0]["val_identity"] if val else None,
            "val_first": val[0]["val_agreement"] if val else None, "val_last": val[-1]["val_agreement"] if val else None,
            "val_prompts": val[0]["val_prompts"] if val else None,
            "reward_last": sum(r["reward_mean"] for r in tail) / len(tail) if tail else None,
            "renders": sum(r.get("renders", 0) for r in rows), "cache_hits": sum(r.get("cache_hits", 0) for r in rows),
            "fallbacks": sum(r.get("fallbacks", 0) for r in rows)}


def fmt(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4f}"


def _val_rows(cfg: TrainConfig, summary: dict) -> str:
    if summary.get("val_first") is None:
        return ""
    return (f"| held-out agreement ({summary['val_prompts']} prompts of `{cfg.val_data}`): identity | "
            f"{fmt(summary['val_identity'])} |\n"
            f"| held-out agreement: start of optimisation -> end | {fmt(summary['val_first'])} -> "
            f"{fmt(summary['val_last'])} |\n")


def _edit_row(summary: dict) -> str:
    """What the faithfulness guard will let this adapter change (its edits.json, bridge.models.faithfulness)."""
    e = summary.get("edits")
    if not e:
        return ""
    return (f"| edit record (`edits.json`, what the faithfulness guard licenses) | {e['learned_drops']} words learned "
            f"to drop or replace, {e['learned_adds']} to write, {e['classes']} classes; {e['vocabulary']} words in "
            "the training prompts |\n")


def model_card(cfg: TrainConfig, data_info: dict, summary: dict) -> str:
    from bridge.models.rewriter import CURVES

    return f"""---
library_name: peft
base_model: {presets.rewriter(cfg.rewriter).hub_id or cfg.rewriter}
tags: [sd-bridge, prompt-translation, lora]
---
# sd-bridge adapter: {', '.join(data_info['source']) or 'source'} -> {cfg.target}

A LoRA on the rewriter `{cfg.rewriter}` that rewrites the text leaves of prompts written for
{', '.join(data_info['source'])} so that `{cfg.target}` draws what the source drew, trained with sd-bridge.

| | |
|---|---|
| data | `{cfg.data}`: {data_info['prompts']} prompts, {data_info['rows']} source renders |
| scorer | `{cfg.scorer}` |
| algorithm | {cfg.algo}, K={cfg.k}, {cfg.prompts_per_step} prompts/step, {cfg.steps} steps after {cfg.warm_start_steps} warm-start steps |
| LoRA | r={cfg.lora_r}, alpha={cfg.lora_alpha}, dropout={cfg.lora_dropout}, targets={', '.join(cfg.lora_targets)} |
| reward | mean CLIP cosine of target renders vs stored source images over the dataset's seeds; text weight {cfg.text_weight}, token penalty {cfg.token_penalty}, length penalty {cfg.length_penalty} |
| reward, first step | {fmt(summary.get('reward_first'))} |
| reward, last 10% of steps | {fmt(summary.get('reward_last'))} |
| target renders / cache hits | {summary.get('renders')} / {summary.get('cache_hits')} |
| structure fallbacks | {summary.get('fallbacks')} |
{_edit_row(summary)}{_val_rows(cfg, summary)}
{"![learning curves](" + CURVES + ")" + chr(10) if summary.get("curves") else ""}
Use: `sd-bridge translate --adapter THIS_DIR "PROMPT"` or `bridge.Translator.from_pretrained("THIS_DIR")`.
Measure it with `sd-bridge eval --adapter THIS_DIR`. The resolved config is in `config.json`, the per-step
log in `{LOG}`.
"""


def push_to_hub(repo_id: str, out: Path) -> None:
    from huggingface_hub import HfApi

    try:
        api = HfApi()
        api.create_repo(repo_id, exist_ok=True)
        api.upload_folder(repo_id=repo_id, folder_path=str(out), ignore_patterns=["checkpoints/*", "render-cache/*"])
    except Exception as err:  # offline, no token, no permission
        raise RuntimeError(f"--push-to-hub {repo_id} failed ({type(err).__name__}: {err}); the adapter is saved in "
                           f"{out}") from None
