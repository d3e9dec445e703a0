"""`sd-bridge train`: a LoRA on the rewriter, trained so the target's renders of its rewrites agree with
the stored source images (DESIGN §4). Read top to bottom:

  1. data      the gathered dataset as prompt groups (seeds + source embeddings); the policy's input is
               each prompt after the syntax strategy, so the model only ever rewrites text leaves
  2. models    base rewriter + peft LoRA; the KL reference is a frozen copy of the warm-started adapter
               (as trl re-training an adapter keeps the starting adapter as reference), so the KL
               anchors to "same prompt", not to the base model's own answer
  3. warm start  SFT towards identity (+ optional pairs), so optimisation starts at the "same prompt"
               baseline rather than below it
  4. optimise  per step: sample prompts -> K candidates each (rollout; the model reads the whole prompt,
               leaves numbered, and with --rewrite-negative the negative too) -> reward -> update with
               GRPO (group-normalised advantages, clipped ratio, KL to the reference) or RAFT (SFT on the
               best of K); generation, reward and loss are the shared functions in rewriter/reward/losses.
               With --val-data, held-out agreement as served when optimising starts and at checkpoints
  5. output    adapter_model.safetensors + adapter_config.json + sd_bridge_adapter.json + config.json +
               train_log.jsonl + learning_curves.png + README.md model card + edits.json, what the reward
               accepted each rewrite for changing (bridge.models.faithfulness: the serving guard reads it)

Every random stream is a pure function of (seed, step): the prompts of a step, the sampling seed and the
dropout seed. A checkpoint (LoRA + optimizer state, safetensors) therefore resumes exactly.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from bridge.models import presets
from bridge.models.faithfulness import NEGATIVE_EDITS
from bridge.syntax.policy import MigrationPolicy
from bridge.config import log_plan, print_json_summary, save_config, summary_log
from training.checkpoints import check_resume, find_resume, load_checkpoint, same_run, save_checkpoint
from training.config import TrainConfig
from training.curves import LOG
from training.data import policy_inputs
from training.model_card import fmt, model_card, push_to_hub, summarise_log
from training.plan import estimate, plan_run


# ------------------------------------------------------------------------------ 1-2. models
def build_model(cfg: TrainConfig, device: str):
    from peft import LoraConfig, get_peft_model

    from bridge.models.loading import load_rewriter

    base, tokenizer = load_rewriter(presets.rewriter(cfg.rewriter), device=device, dtype="float32")
    torch.manual_seed(cfg.seed)  # LoRA init
    model = get_peft_model(base, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                                            target_modules=list(cfg.lora_targets), task_type="SEQ_2_SEQ_LM"))
    return model, tokenizer


def step_prompts(cfg: TrainConfig, step: int, n: int) -> list[int]:
    """The prompt indices of `step`: a pure function of (seed, step), so resumes and processes agree."""
    rng = random.Random(f"{cfg.seed}/prompts/{step}")
    return rng.sample(range(n), min(cfg.prompts_per_step, n))


def _pair(source: str, target: str, names, fmt: str) -> list[tuple[str, str]]:
    """(model input, model output) SFT pairs that rewrite prompt `source` into `target` (same leaf count)."""
    from bridge.syntax.prompt import parse
    from bridge.models.rewriter import flatten, mark, model_leaves, sequences, split_edges

    src, tgt = ([leaf.value for leaf in model_leaves(parse(t, names).nodes)] for t in (source, target))
    if len(src) != len(tgt):
        return []
    if fmt == "flat":
        return [(seq, flatten(tgt)) for seq, _ in sequences(src, fmt)]
    return [(seq, mark([split_edges(tgt[i])[1] for i in covered])) for seq, covered in sequences(src, fmt)]


def warm_pairs(cfg: TrainConfig, inputs: list[str], negatives: list[str | None], names) -> list[tuple[str, str]]:
    """Identity pairs of every training prompt (and negative prompt, with --rewrite-negative) in the model's
    format, plus the user's pairs; each input carries its task prefix."""
    from bridge.models.rewriter import NEGATIVE_PREFIX, PREFIX

    pairs = {(PREFIX + a, b) for t in inputs for a, b in _pair(t, t, names, cfg.format)}
    if cfg.rewrite_negative:
        pairs |= {(NEGATIVE_PREFIX + a, b) for t in negatives if t for a, b in _pair(t, t, names, cfg.format)}
    pairs = sorted(pairs)
    if cfg.warm_start_pairs:
        path = Path(cfg.warm_start_pairs)
        if not path.is_file():
            raise FileNotFoundError(f"warm-start pairs file not found: {path}")
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                row = json.loads(line)
                if not {"source", "target"} <= set(row):
                    raise ValueError(f"{path}:{n}: expected keys 'source' and 'target'")
                more = _pair(row["source"], row["target"], names, cfg.format)
                if not more:
                    raise ValueError(f"{path}:{n}: source and target must have the same number of text leaves")
                pairs += [(PREFIX + a, b) for a, b in more]
    return pairs


@dataclass
class Rollout:
    """One candidate of a step: its prompt and negative prompt, and the (model input with its prefix,
    output, sampled ids) sequences that made them. A candidate whose structure did not read back (`fallback`)
    is the prompt as written, and keeps the sequences the model sampled: they are what its penalty pushes
    down."""

    text: str
    negative: str | None
    sequences: list[tuple[str, str, list[int]]]
    fallback: bool
    unfinished: bool


def rollout(cfg: TrainConfig, model, tokenizer, prompts: list[str], negatives: list[str | None], names,
            max_new: int, seed: int) -> list[list[Rollout]]:
    """K sampled candidates per prompt; with --rewrite-negative each pairs with a sample of its negative prompt."""
    from bridge.models.rewriter import NEGATIVE_PREFIX, PREFIX, rewrite_prompts

    kw = dict(num_candidates=cfg.k, sample=True, max_new_tokens=max_new, temperature=cfg.temperature,
              fallback_unfinished=False,  # scored as generated; counted in the log
              size_from_input=cfg.max_new_tokens is None, fmt=cfg.format)  # an explicit limit is a cap
    pos = rewrite_prompts(model, tokenizer, prompts, names, prefix=PREFIX, seed=seed, **kw)
    neg = (rewrite_prompts(model, tokenizer, [n or "" for n in negatives], names, prefix=NEGATIVE_PREFIX,
                           seed=seed + 1, **kw) if cfg.rewrite_negative else None)
    out = []
    for i, group in enumerate(pos):
        row = []
        for c, cand in enumerate(group):
            seqs = [(PREFIX + a, b, x) for a, b, x in zip(cand.inputs, cand.outputs, cand.ids)]
            negative, unfinished, fallback = negatives[i], cand.unfinished, cand.fallback
            if neg is not None and negatives[i]:
                nc = neg[i][c]
                unfinished |= nc.unfinished
                fallback |= nc.fallback
                negative = negative if nc.fallback else nc.text
                seqs += [(NEGATIVE_PREFIX + a, b, x) for a, b, x in zip(nc.inputs, nc.outputs, nc.ids)]
            row.append(Rollout(cand.text, negative, seqs, fallback, unfinished))
        out.append(row)
    return out


# ------------------------------------------------------------------------------ updates
def _micro(seq, size: int):
    for i in range(0, len(seq), size):
        yield i, seq[i : i + size]


def _backward(accelerator, model, loss, last: bool) -> None:
    """Accumulate without DDP's gradient all-reduce except on a pass's last micro-batch (torch's no_sync
    pattern for gradient accumulation): every process then syncs exactly once per optimiser step, however
    many micro-batches its share needed. Syncing on each backward pairs one process's all-reduces with
    another's unrelated ones when their micro-batch counts differ, and can hang at the end of the run."""
    if last:
        accelerator.backward(loss)
        return
    with accelerator.no_sync(model):
        accelerator.backward(loss)


def sft_update(model, opt, accelerator, tokenizer, pairs, prefix, micro_batch: int) -> float:
    from training.losses import sft_loss

    total = 0.0
    chunks = list(_micro(pairs, micro_batch))
    for n, (_, chunk) in enumerate(chunks):
        loss = sft_loss(model, tokenizer, [a for a, _ in chunk], [b for _, b in chunk], prefix) * len(chunk) / len(pairs)
        _backward(accelerator, model, loss, last=n == len(chunks) - 1)
        total += loss.detach().item()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return total


REFERENCE = "reference_lora.safetensors"  # the warm-started adapter: the KL anchor of the RL phase


def _lora_state(peft_model) -> dict:
    """A detached copy of the LoRA weights."""
    from peft import get_peft_model_state_dict

    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(peft_model).items()}


class _Swapped:
    """Within the block, the LoRA holds `weights` (the reference); the trained weights come back after."""

    def __init__(self, peft_model, weights: dict):
        self.model, self.weights = peft_model, weights

    def __enter__(self):
        from peft import set_peft_model_state_dict

        self.saved = _lora_state(self.model)
        set_peft_model_state_dict(self.model, self.weights)

    def __exit__(self, *exc):
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(self.model, self.saved)


def reference_weights(cfg: TrainConfig, peft_model, out: Path, main: bool, resumed: bool) -> dict | None:
    """The frozen warm-started LoRA, saved beside the checkpoints when the RL phase starts and reloaded only
    by a run resumed past that point (a fresh run into an old directory snapshots its own). None without
    a warm start: the fresh LoRA (B = 0) is then the base model, which the disabled adapter gives."""
    from safetensors.torch import load_file, save_file

    if not cfg.warm_start_steps:
        return None
    path = out / "checkpoints" / REFERENCE
    if resumed:
        if not path.is_file():
            raise FileNotFoundError(f"--resume: {path} is missing, so the KL reference (the warm-started "
                                    "adapter) cannot be restored; restart the run without --resume")
        return load_file(str(path), device=str(next(peft_model.parameters()).device))
    weights = _lora_state(peft_model)
    if main:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous().cpu() for k, v in weights.items()}, str(path))
    return weights


def grpo_update(model, opt, accelerator, tokenizer, samples, prefix, cfg: TrainConfig,
                reference: dict | None = None) -> dict:
    """samples: (leaf input, leaf output, sampled ids, advantage). Old and reference log-probs are fixed
    before updating; every log-prob is of the sampled ids at the sampling temperature."""
    from training.losses import grpo_loss, token_logprobs

    peft_model = accelerator.unwrap_model(model)
    ins, outs, ids = [s[0] for s in samples], [s[1] for s in samples], [s[2] for s in samples]
    adv = torch.tensor([s[3] for s in samples], dtype=torch.float32, device=accelerator.device)

    def logprobs(m, i, n):
        return token_logprobs(m, tokenizer, ins[i : i + n], outs[i : i + n], prefix, temperature=cfg.temperature,
                              output_ids=ids[i : i + n])

    # Old and reference log-probs without dropout: the ratio is then exactly 1 on the first pass.
    peft_model.eval()
    with torch.no_grad():
        chunks = list(_micro(samples, cfg.micro_batch))
        old = [logprobs(peft_model, i, len(c))[0] for i, c in chunks]
        with _Swapped(peft_model, reference) if reference is not None else peft_model.disable_adapter():
            ref = [logprobs(peft_model, i, len(c))[0] for i, c in chunks]
    # Updates run without dropout too, as trl's GRPOConfig(disable_dropout=True) does (its default is False):
    # dropout noise would make the importance ratio differ from 1 on samples the policy itself just drew.
    # Per-token normalisation across the whole rollout (DAPO): each micro-batch's token sum is divided by
    # the rollout's token count, so the micro-batches add up to one token mean.
    total = sum(max(1, len(x)) for x in ids)
    stats = {"loss": 0.0, "kl": 0.0, "clip_frac": 0.0}
    for _ in range(cfg.updates_per_step):
        for j, (i, c) in enumerate(chunks):
            logp, mask = logprobs(model, i, len(c))
            loss, st = grpo_loss(logp, old[j], ref[j], mask, adv[i : i + len(c)], cfg.clip_eps, cfg.kl_coef,
                                 total_tokens=total)
            _backward(accelerator, model, loss, last=j == len(chunks) - 1)
            share = float(mask.sum()) / total / cfg.updates_per_step
            stats["loss"] += loss.detach().item() / cfg.updates_per_step
            stats["kl"] += st["kl"] * share
            stats["clip_frac"] += st["clip_frac"] * share
        opt.step()
        opt.zero_grad(set_to_none=True)
    return stats


def update_policy(cfg: TrainConfig, model, opt, accelerator, tokenizer, flat: list, r: torch.Tensor,
                  reference: dict | None, identity: torch.Tensor | None = None) -> dict:
    """One optimiser step on a rollout (`flat`: the step's Rollouts, group after group; `r`: their rewards;
    `identity`: the reward of each group's prompt as written). GRPO weighs every sampled sequence by its
    candidate's group advantage; RAFT fine-tunes on the best readable candidate of each group, and only where
    it beats the prompt as written by more than the noise floor (`--min-group-std`): fine-tuning on a best of
    K that ties identity teaches noise. A process without samples takes an idle step (DDP stays in step)."""
    from training.losses import group_advantages, zero_signal_fraction

    if cfg.algo == "grpo":
        scale = cfg.advantage == "std"
        adv = group_advantages(r, cfg.k, cfg.min_group_std, scale=scale) if len(r) else r
        stats = {"zero_signal_groups": zero_signal_fraction(r, cfg.k, cfg.min_group_std) if scale else
                 float((r.view(-1, cfg.k).std(dim=1) == 0).float().mean()) if len(r) else 0.0}
        samples = [(a, b, ids, float(adv[j])) for j, c in enumerate(flat) for a, b, ids in c.sequences]
        if not samples:
            idle_update(model, opt, accelerator, cfg.updates_per_step)
            return stats
        return {**stats, **grpo_update(model, opt, accelerator, tokenizer, samples, "", cfg, reference)}
    best = []
    for g in range(len(flat) // cfg.k):
        readable = [j for j in range(g * cfg.k, (g + 1) * cfg.k) if not flat[j].fallback]
        j = max(readable, key=lambda j: float(r[j]), default=None)
        if j is not None and (identity is None or float(r[j]) > float(identity[g]) + cfg.min_group_std):
            best.append(j)
    stats = {"raft_groups_used": len(best) / max(1, len(flat) // cfg.k)}
    samples = [(a, b) for j in best for a, b, _ in flat[j].sequences]
    if not samples:
        idle_update(model, opt, accelerator, cfg.updates_per_step)
        return stats
    return {**stats, "loss": sum(sft_update(model, opt, accelerator, tokenizer, samples, "", cfg.micro_batch)
                                 for _ in range(cfg.updates_per_step)) / cfg.updates_per_step}


def candidate_edits(flat: list, sources: list[str], negatives: list[str | None], names) -> list[dict]:
    """Per candidate, what it changed in content words (`bridge.models.faithfulness.diff`, as the serving guard
    reads a rewrite), by part: "prompt", and "negative" where the negative was rewritten. A candidate that fell
    back is served as written and changed nothing in its prompt. Computed once per step: the preservation
    penalty and the edit record both read it."""
    from bridge.models.faithfulness import diff, leaf_words

    out = []
    for cand, source, negative in zip(flat, sources, negatives):
        pairs = [("prompt", source, None if cand.fallback else cand.text),
                 ("negative", negative, cand.negative if cand.negative != negative else None)]
        out.append({name: diff(leaf_words(before, names), leaf_words(after, names))
                    for name, before, after in pairs if before and after is not None})
    return out


def edit_sizes(edits: list[dict]) -> list[int]:
    """Content words each candidate drops plus those it adds, over its parts (`candidate_edits`): what
    `--preserve-penalty` charges. A renderer ignores many words a person wrote on purpose ("fox" in a world of
    shapes, a LoRA trigger word to a real SD2), so the reward alone is indifferent to deleting them; this makes
    every change pay, and only a change the renders reward by more survives (#40). A word that only moves
    costs nothing."""
    return [sum(len(e.dropped) + len(e.added) for e in parts.values()) for parts in edits]


def count_edits(edits: list[dict], r: torch.Tensor, k: int) -> dict:
    """What each candidate of a step changed in content words (`candidate_edits`), counted as accepted (reward
    above its group's mean) or rejected (below): the step's share of the adapter's edit record
    (bridge.models.faithfulness). Ties with the mean say nothing and are not counted."""
    from bridge.models.faithfulness import EditRecord

    records = {"prompt": EditRecord(), "negative": EditRecord()}
    for j, parts in enumerate(edits):
        mean = float(r[j // k * k : (j // k + 1) * k].mean())
        if abs(float(r[j]) - mean) < 1e-9:
            continue
        for name, edit in parts.items():
            records[name].count(edit, float(r[j]) > mean)
    return {name: rec.counts() for name, rec in records.items()}


def merge_edits(parts: list[dict]) -> dict:
    """Per-process `count_edits` results as one."""
    from bridge.models.faithfulness import EditRecord

    out = {}
    for name in ("prompt", "negative"):
        rec = EditRecord()
        for part in parts:
            rec.merge(EditRecord.from_json(part[name]))
        out[name] = rec.counts()
    return out


def write_edit_records(cfg: TrainConfig, out: Path, inputs: list[str], negatives: list[str | None], names) -> dict:
    """edits.json (and edits-negative.json with --rewrite-negative) from the log's per-step counts (a resumed
    run's log keeps exactly the steps its adapter took) and the training prompts' words."""
    from bridge.models.faithfulness import EditRecord
    from training.curves import read_log

    records = {"prompt": EditRecord(), "negative": EditRecord()}
    for row in read_log(out / LOG)[0]:
        for name, data in (row.get("edits") or {}).items():
            records[name].merge(EditRecord.from_json(data))
    records["prompt"].see(inputs, names)
    records["prompt"].save(out)
    if cfg.rewrite_negative:
        records["negative"].see([n for n in negatives if n], names)
        records["negative"].save(out, NEGATIVE_EDITS)
    return records["prompt"].summary()


def idle_update(model, opt, accelerator, passes: int = 1) -> None:
    """No samples on this process this step: zero losses keep DDP's collective backward in step, one per
    optimiser step the busy processes take."""
    for _ in range(passes):
        loss = sum(p.sum() for p in model.parameters() if p.requires_grad) * 0.0
        accelerator.backward(loss)
        opt.step()
        opt.zero_grad(set_to_none=True)


# ------------------------------------------------------------------------------ the run
@dataclass
class _Run:
    """What every step of a run needs: its settings, models, data, reward, and where its records go."""
    cfg: TrainConfig
    accelerator: object
    model: object
    opt: object
    tokenizer: object
    groups: list
    inputs: list[str]
    negatives: list[str | None]
    names: object  # the policy's embedding names: the rewriter must keep them as they are
    max_new: int
    cache: object
    reward_fn: object
    validator: object
    main: bool
    reference: dict | None = None  # GRPO's KL anchor, taken when optimisation starts (reference_weights)

    @property
    def out(self) -> Path:
        return self.cfg.out


def run_train(cfg: TrainConfig, log=print, reward_fn=None) -> dict:
    from accelerate import Accelerator

    from training.data import load_groups
    from training.validate import Validator

    log = summary_log(cfg, log)
    accelerator = Accelerator(cpu=cfg.device == "cpu" or not torch.cuda.is_available())
    main = accelerator.is_main_process
    # 1. Data: prompt groups and the policy's inputs.
    groups, data_info = load_groups(cfg.data, cfg.scorer, cfg.reward_seeds)
    inputs, negatives = policy_inputs(cfg, groups)
    max_new = cfg.max_new_tokens or presets.rewriter(cfg.rewriter).max_new_tokens
    # 2. Models.
    model, tokenizer = build_model(cfg, str(accelerator.device))
    if cfg.dry_run:
        plan = plan_run(cfg, groups)
        plan.update(estimate(cfg, model, tokenizer, inputs, plan))
        if main:
            log_plan(cfg, log, plan)
        return plan
    ckpt = find_resume(cfg)  # before any work: a fresh run into another run's checkpoints is refused
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
    model, opt = accelerator.prepare(model, opt)
    cache = _render_cache(cfg, str(accelerator.device)) if reward_fn is None or cfg.val_data else None
    # Held-out agreement at checkpoints (main process; the others wait at the checkpoint barrier).
    validator = Validator(cfg, cache, [g.prompt for g in groups]) if cfg.val_data and main else None
    reward = reward_fn if reward_fn is not None else _clip_reward(cfg, cache)
    run = _Run(cfg, accelerator, model, opt, tokenizer, groups, inputs, negatives,
               MigrationPolicy.of(cfg).embedding_names(), max_new, cache, reward, validator, main)
    start = _start(run, ckpt, data_info, log)
    # 3.-4. Warm start, then optimise, step by step.
    history = _steps(run, start)
    accelerator.wait_for_everyone()
    if not main:
        return {"history": history}
    # 5. Output: the adapter directory.
    summary = _write_adapter(run, data_info)
    log(f"adapter written to {run.out} ({summary.get('rl_steps', 0)} optimisation steps; reward first "
        f"{fmt(summary.get('reward_first'))} -> last {fmt(summary.get('reward_last'))})")
    print_json_summary(cfg, {"adapter": str(run.out), **summary})
    return {"history": history, "summary": summary, "out": str(run.out)}


def _start(run: _Run, ckpt: Path | None, data_info: dict, log) -> int:
    """The step to start at: a checkpoint's, loaded, or 0. The main process writes the resolved config and
    keeps the log's rows up to that step."""
    cfg, start = run.cfg, 0
    if ckpt is not None:
        check_resume(cfg, ckpt)
        start = load_checkpoint(ckpt, run.model, run.opt, run.accelerator)
        if run.main:
            log(f"resumed from {ckpt} at step {start}")
    if run.main:
        run.out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run.out, presets={"target": presets.describe(presets.pipeline(cfg.target)),
                                           "rewriter": presets.describe(presets.rewriter(cfg.rewriter)),
                                           "scorer": presets.describe(presets.scorer(cfg.scorer))}, data=data_info)
        _truncate_log(run.out / LOG, start)
    return start


def _steps(run: _Run, start: int) -> list[dict]:
    """Steps `start`.. of the run, each logged, checkpointed and validated on schedule; their records."""
    from tqdm.auto import tqdm

    cfg, total = run.cfg, run.cfg.warm_start_steps + run.cfg.steps
    writer = _tensorboard(cfg, run.out) if run.main else None
    pairs = warm_pairs(cfg, run.inputs, run.negatives, run.names) if cfg.warm_start_steps else []
    bar = tqdm(total=total, initial=start, unit="step", desc="train", disable=not (cfg.progress and run.main))
    history = []
    for step in range(start, total):
        t0 = time.perf_counter()
        torch.manual_seed(cfg.seed * 1_000_003 + step)  # dropout stream of this step
        run.model.train()
        if step == cfg.warm_start_steps and run.validator is not None and not _validated(run.out, step):
            # The curve's first point: the model optimisation starts from (warm-started, or the base).
            _validate(run.validator, run.accelerator.unwrap_model(run.model), run.tokenizer, cfg, run.max_new, step,
                      run.out)
        if step < cfg.warm_start_steps:
            record = {"step": step + 1, **_warm_start_step(run, pairs, step, t0)}
        else:
            record = {"step": step + 1, **_optimise_step(run, step, t0, resumed=start > cfg.warm_start_steps)}
        record["time_step"] = time.perf_counter() - t0
        history.append(record)
        if run.main:
            _log(run.out, writer, record)
        bar.update(1)
        if record.get("reward_mean") is not None:
            bar.set_postfix(reward=f"{record['reward_mean']:.3f}")
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == total:
            _checkpoint(run, step + 1)
    bar.close()
    if writer is not None:
        writer.close()
    return history


def _warm_start_step(run: _Run, pairs: list, step: int, t0: float) -> dict:
    """3. Warm start: SFT towards identity (+ user pairs) on this process's share of a seeded batch."""
    cfg, acc = run.cfg, run.accelerator
    rng = random.Random(f"{cfg.seed}/warm/{step}")
    batch = rng.sample(pairs, min(cfg.warm_start_batch, len(pairs)))[acc.process_index::acc.num_processes]
    loss = sft_update(run.model, run.opt, acc, run.tokenizer, batch, "", cfg.micro_batch) if batch else (
        idle_update(run.model, run.opt, acc) or 0.0)
    return {"phase": "warm_start", "loss": loss, "time_update": time.perf_counter() - t0}


def _optimise_step(run: _Run, step: int, t0: float, resumed: bool) -> dict:
    """4. Optimise: rollout -> reward -> update, on this process's share of the step's prompts."""
    cfg, acc, groups, inputs = run.cfg, run.accelerator, run.groups, run.inputs
    rl_step = step - cfg.warm_start_steps
    if run.reference is None and cfg.algo == "grpo":
        run.reference = reference_weights(cfg, acc.unwrap_model(run.model), run.out, run.main, resumed=resumed)
    idx = step_prompts(cfg, rl_step, len(groups))[acc.process_index::acc.num_processes]
    run.model.eval()
    cands = rollout(cfg, acc.unwrap_model(run.model), run.tokenizer, [inputs[i] for i in idx],
                    [run.negatives[i] for i in idx], run.names, run.max_new, seed=cfg.seed * 7919 + rl_step)
    t1 = time.perf_counter()
    flat = [c for group in cands for c in group]
    owner = [i for i, group in zip(idx, cands) for _ in group]
    before = run.cache.snapshot() if run.cache else {}
    # Every candidate, and for RAFT each prompt as written too (identity: the bar its best of K must clear).
    # Identity renders are the same every time a prompt comes back: cached.
    texts = [c.text for c in flat] + ([inputs[i] for i in idx] if cfg.algo == "raft" else [])
    scored = owner + (idx if cfg.algo == "raft" else [])
    rewards = run.reward_fn(sources=[inputs[i] for i in scored], candidates=texts,
                            seeds=[groups[i].seeds for i in scored],
                            negatives=[c.negative for c in flat] + [run.negatives[i] for i in scored[len(flat):]],
                            source_embeddings=[groups[i].embeddings for i in scored]) if flat else []
    t2 = time.perf_counter()
    run.model.train()
    r = torch.tensor(rewards[: len(flat)], dtype=torch.float32)
    identity = torch.tensor(rewards[len(flat):], dtype=torch.float32) if cfg.algo == "raft" else None
    # A candidate that does not read back is served as the prompt as written, and scores that minus the penalty
    # (#39: scored as the prompt itself, an unreadable sample was as good as copying, and nothing taught the model
    # to stop making them).
    r = r - cfg.fallback_penalty * torch.tensor([float(c.fallback) for c in flat])
    edits = candidate_edits(flat, [inputs[i] for i in owner], [run.negatives[i] for i in owner], run.names)
    if cfg.preserve_penalty:
        r = r - cfg.preserve_penalty * torch.tensor(edit_sizes(edits), dtype=torch.float32)
    stats = update_policy(cfg, run.model, run.opt, acc, run.tokenizer, flat, r, run.reference, identity)
    t3 = time.perf_counter()
    edits = count_edits(edits, r, cfg.k)
    if acc.num_processes > 1:  # the main process logs the step: it records every process's edits
        from accelerate.utils import gather_object

        edits = merge_edits(gather_object([edits]))
    record = dict(phase=cfg.algo, reward_mean=float(r.mean()) if len(r) else None,
                  reward_std=float(r.std()) if len(r) > 1 else None,
                  identity_mean=float(identity.mean()) if identity is not None and len(identity) else None,
                  reward_max=float(r.max()) if len(r) else None, fallbacks=sum(c.fallback for c in flat),
                  unfinished=sum(c.unfinished for c in flat), candidates=len(flat), time_generate=t1 - t0,
                  time_reward=t2 - t1, time_update=t3 - t2, edits=edits, **stats)
    if run.cache is not None:
        record.update(run.cache.step_stats(before))
    return record


def _checkpoint(run: _Run, done: int) -> None:
    """After `done` steps: a held-out point (once optimising), then a checkpoint that resumes exactly."""
    if run.validator is not None and done > run.cfg.warm_start_steps:
        _validate(run.validator, run.accelerator.unwrap_model(run.model), run.tokenizer, run.cfg, run.max_new, done,
                  run.out)
    run.accelerator.wait_for_everyone()
    if run.main:
        save_checkpoint(run.out / "checkpoints" / f"step-{done:06d}", run.model, run.opt, done, run.accelerator,
                        same_run(run.cfg))


def _write_adapter(run: _Run, data_info: dict) -> dict:
    """5. The adapter directory: LoRA weights, serving metadata, training-prompt hashes, curves, model card."""
    from bridge.models.rewriter import save_train_prompts
    from training.curves import plot_curves

    cfg, out = run.cfg, run.out
    run.accelerator.unwrap_model(run.model).save_pretrained(out, safe_serialization=True)
    adapter_meta(cfg, run.max_new, data_info["source"][0] if data_info["source"] else "").save(out)
    save_train_prompts(out, [g.prompt for g in run.groups])  # eval refuses to score an adapter on these
    edits = write_edit_records(cfg, out, run.inputs, run.negatives, run.names)
    summary = summarise_log(out / LOG)
    summary["curves"] = plot_curves(out / LOG, out) is not None
    summary["edits"] = edits
    (out / "README.md").write_text(model_card(cfg, data_info, summary), encoding="utf-8")
    if cfg.push_to_hub:
        push_to_hub(cfg.push_to_hub, out)
    return summary


# ------------------------------------------------------------------------------ helpers
def _render_cache(cfg: TrainConfig, device: str):
    """Target renders and their scorer embeddings, cached on disk (the reward and validation share it)."""
    from bridge.models.render import Renderer
    from bridge.models.render_cache import RenderCache
    from bridge.models.score import Scorer

    return RenderCache(cfg.cache_dir or cfg.out / "render-cache", Renderer(presets.pipeline(cfg.target), device=device),
                       Scorer(presets.scorer(cfg.scorer), device=device), batch_size=cfg.render_batch)


def _clip_reward(cfg: TrainConfig, cache):
    from training.reward import ClipAgreementReward

    # The token penalty only means something where renders truncate: A1111 weighting chunks past 75 tokens.
    truncates = cache.renderer.preset.truncates and cache.renderer.settings.weighting == "plain"
    return ClipAgreementReward(cache, cache.scorer, cfg.text_weight, cfg.token_penalty, cfg.length_penalty,
                               truncates=truncates)


def _log(out: Path, writer, record: dict) -> None:
    with (out / LOG).open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")
    if writer is not None:
        for key, value in record.items():
            if isinstance(value, (int, float)) and key != "step":
                writer.add_scalar(key, value, record["step"])


def _validated(out: Path, step: int) -> bool:
    """A resumed run keeps the log's rows up to its checkpoint, a validation row at that step included."""
    from training.curves import read_log

    return any(r["step"] == step for r in read_log(out / LOG)[1])


def adapter_meta(cfg: TrainConfig, max_new: int, source: str = ""):
    """What serving needs to know about the adapter this run trains (sd_bridge_adapter.json)."""
    from bridge.models.rewriter import AdapterMeta

    rewriter = presets.rewriter(cfg.rewriter)
    return AdapterMeta(cfg.rewriter, rewriter.revision, source, cfg.target, max_new_tokens=max_new, format=cfg.format,
                       rewrite_negative=cfg.rewrite_negative)


def _validate(validator, peft_model, tokenizer, cfg: TrainConfig, max_new: int, step: int, out: Path) -> None:
    """One point of the held-out curve, logged as its own row (phase "val") at the steps done so far."""
    t = time.perf_counter()
    row = {"step": step, "phase": "val", **validator(peft_model, tokenizer, adapter_meta(cfg, max_new)),
           "time_val": time.perf_counter() - t}
    with (out / LOG).open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(row) + "\n")


def _tensorboard(cfg: TrainConfig, out: Path):
    if not cfg.tensorboard:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ValueError("--tensorboard needs the tensorboard package: uv add tensorboard") from None
    return SummaryWriter(str(out / "tensorboard"))


def _truncate_log(path: Path, step: int) -> None:
    """A resumed run rewrites the log from its checkpoint on: no step is logged twice."""
    if not path.exists():
        return
    keep = [line for line in path.read_text(encoding="utf-8").splitlines() if json.loads(line)["step"] <= step]
    path.write_text("".join(line + "\n" for line in keep), encoding="utf-8")
