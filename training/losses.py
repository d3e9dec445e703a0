"""Log-probabilities and losses, shared by every algorithm (GRPO, RAFT, the warm start).

Sequences are (leaf input, leaf output) pairs of the seq2seq rewriter; a candidate prompt's log-prob is
the sum over its leaves. Formulas: GRPO (Shao et al. 2024, DeepSeekMath §4.1): advantages normalised
within each prompt's group, PPO clipped ratio, and the k3 KL estimator to the reference policy
(Schulman 2020, "Approximating KL divergence"). The reference is the adapter as the warm start left it,
frozen when optimisation starts (`training.trainer.reference_weights`), so the KL anchors to "same prompt";
only without a warm start is it the base model (the fresh LoRA adds nothing). `--advantage mean` drops the
division by the group's std, as Dr. GRPO does (Liu et al. 2025, "Understanding R1-Zero-Like Training", §3.1:
the std gives groups whose rewards barely differ, here by render noise, the largest advantages).

The clip only acts when a rollout is optimised more than once (`--updates-per-step` > 1): old log-probs
are taken right before the first pass, so on that pass the ratio is exactly 1. With one pass per rollout
(the default) this GRPO is REINFORCE with a group-mean baseline, normalised by the group std, plus KL.
"""

from __future__ import annotations

import torch


def token_logprobs(model, tokenizer, inputs: list[str], outputs: list[str], prefix: str,
                   max_length: int = 512, temperature: float = 1.0,
                   output_ids: list[list[int]] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log p(output | prefix + input) [N, T] and the mask of real tokens [N, T].

    `temperature` must be the sampler's: the policy that drew a sample is softmax(logits / T), and trl's
    GRPO divides the logits by it likewise. `output_ids` scores exactly the sampled token ids (EOS only
    where generation produced one); without it the output texts are tokenized, with an EOS appended, as
    SFT targets are. Decoded text re-encodes to other ids often enough that a policy gradient must not
    use it.
    """
    device = next(model.parameters()).device
    enc = tokenizer([prefix + x for x in inputs], return_tensors="pt", padding=True, truncation=True,
                    max_length=max_length).to(device)
    if output_ids is not None:
        labels = torch.full((len(output_ids), max(1, max(len(ids) for ids in output_ids))), -100, dtype=torch.long)
        for row, ids in enumerate(output_ids):
            labels[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        labels = labels.to(device)
        mask = labels != -100
    else:
        labels = tokenizer(list(outputs), return_tensors="pt", padding=True, truncation=True,
                           max_length=max_length).input_ids.to(device)
        mask = labels != tokenizer.pad_token_id
        labels = labels.masked_fill(~mask, -100)
    logits = model(**enc, labels=labels).logits  # decoder inputs are the shifted labels
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)
    picked = logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return picked * mask, mask


def sequence_logprobs(model, tokenizer, inputs, outputs, prefix) -> torch.Tensor:
    lp, _ = token_logprobs(model, tokenizer, inputs, outputs, prefix)
    return lp.sum(-1)


def group_advantages(rewards: torch.Tensor, group_size: int, min_std: float = 0.0, eps: float = 1e-6,
                     scale: bool = True) -> torch.Tensor:
    """(r - mean_group) / (std_group + eps) for rewards laid out group after group; without `scale`,
    r - mean_group (Dr. GRPO).

    The std is the sample std (n - 1), as trl's GRPOTrainer takes it (torch's default): with groups of 4 the
    population std is 13% smaller and inflates every advantage by as much. With `scale`, a group whose reward
    std is below `min_std` gets zero advantage: its candidates differ by no more than render noise
    (benchmarks/render_noise.py measures the floor), and dividing by a tiny std would blow that noise up to
    advantages of +-1.
    """
    r = rewards.view(-1, group_size)
    centred = r - r.mean(dim=1, keepdim=True)
    if not scale:
        return centred.view(-1)
    std = r.std(dim=1, keepdim=True)
    adv = centred / (std + eps)
    return torch.where(std < min_std, torch.zeros_like(adv), adv).view(-1)


def zero_signal_fraction(rewards: torch.Tensor, group_size: int, min_std: float) -> float:
    """The fraction of groups `group_advantages` zeroes when it scales (logged per step)."""
    r = rewards.view(-1, group_size)
    return float((r.std(dim=1) < min_std).float().mean()) if len(r) else 0.0


def grpo_loss(logp: torch.Tensor, old_logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor,
              advantages: torch.Tensor, clip_eps: float, kl_coef: float,
              total_tokens: int | None = None) -> tuple[torch.Tensor, dict]:
    """Token-level clipped surrogate + k3 KL, summed over real tokens and divided by `total_tokens`: the
    real tokens of the whole batch (DAPO, Yu et al. 2025, §3.3), so every sampled token weighs the same
    whatever its leaf's length or its candidate's leaf count. Without it, the mean over this call's tokens.

    logp/old_logp/ref_logp/mask: [N, T]; advantages: [N] (one per sequence, its candidate's advantage).
    """
    ratio = torch.exp(logp - old_logp)
    adv = advantages.unsqueeze(-1)
    surrogate = torch.minimum(ratio * adv, torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * adv)
    # Clamped so one token the policy has moved far from the reference cannot overflow exp().
    log_ref_ratio = torch.clamp(ref_logp - logp, -20.0, 20.0)
    kl = torch.exp(log_ref_ratio) - log_ref_ratio - 1  # k3: unbiased, always >= 0
    per_token = -(surrogate - kl_coef * kl)
    tokens = mask.sum().clamp(min=1)
    loss = (per_token * mask).sum() / (total_tokens if total_tokens else tokens)
    with torch.no_grad():
        stats = {"kl": float((kl * mask).sum() / tokens),
                 "clip_frac": float((((ratio - 1).abs() > clip_eps).float() * mask).sum() / tokens)}
    return loss, stats


def sft_loss(model, tokenizer, inputs: list[str], outputs: list[str], prefix: str) -> torch.Tensor:
    """Mean token negative log-likelihood of `outputs` (warm start, RAFT)."""
    lp, mask = token_logprobs(model, tokenizer, inputs, outputs, prefix)
    return -(lp.sum() / mask.sum().clamp(min=1))
