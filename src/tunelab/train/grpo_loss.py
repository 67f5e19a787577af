"""The GRPO objective's arithmetic: group advantages, per-token log-probabilities, the clipped loss.

For a prompt with G sampled completions and total rewards r_1..r_G (train/rewards.py):

    A_i = (r_i - mean(r)) / (std(r) + 1e-4)        std with Bessel's correction, as TRL's nanstd
    A_i = r_i - mean(r)                            loss_type dr_grpo (Dr. GRPO: no std division)

Per completion token t of completion i (logp = log pi(token | prefix) under the model being trained,
logits divided by the sampling temperature as TRL does; logp_old = the same at rollout time, detached):

    rho_t  = exp(logp_t - logp_old_t)
    l_t    = -min(rho_t A_i, clip(rho_t, 1 - eps, 1 + eps) A_i)
    kl_t   = exp(ref_t - logp_t) - (ref_t - logp_t) - 1     k3 estimator of KL(pi || ref), beta > 0 only
    l_t   += beta kl_t

With one optimizer step per rollout logp_old = logp.detach(): rho = 1, nothing is clipped, and the
gradient is -A_i grad logp_t (+ beta grad kl_t). Aggregation over the mask m (completion tokens up to
and including the stop token; a truncated completion's are all 0 with mask_truncated_completions):

    grpo     mean_i [ sum_t m l / max(1, sum_t m) ]          each completion's mean, then the mean
    dr_grpo  sum_{i,t} m l / (N x max_completion_length)      N = completions in the batch
    dapo     sum_{i,t} m l / max(1, sum_{i,t} m)             every token weighs the same

This is TRL's `GRPOTrainer._compute_loss` (trl 0.2x) for these three loss types, token-level
importance sampling, epsilon_low = epsilon_high = epsilon, one process.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

LOSS_TYPES = ("grpo", "dr_grpo", "dapo")
STD_EPS = 1e-4  # TRL's: advantages / (std + 1e-4)


def group_advantages(rewards: torch.Tensor, group: int, scale: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(A [N], the group std of each completion's group [N]) for rewards [N] in groups of `group`
    consecutive completions (one prompt's). scale False: A = r - mean (dr_grpo)."""
    r = rewards.view(-1, group)
    mean = r.mean(1, keepdim=True)
    std = r.std(1, keepdim=True)  # unbiased, as TRL's nanstd
    adv = r - mean
    if scale:
        adv = adv / (std + STD_EPS)
    return adv.reshape(-1), std.expand_as(r).reshape(-1)


def completion_logprobs(model, prompts: list[list[int]], completions: list[list[int]], pad_id: int,
                        temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(log pi(c_t | prompt, c_<t) [N, T], mask [N, T]) for N (prompt, completion) token lists, T = the
    longest completion. Each row is prompt + completion, right-padded (positions 0.. as at rollout);
    the head runs only on the positions that predict a completion token; logits / temperature."""
    from tunelab.models.structure import decoder_and_head

    dev = next(model.parameters()).device
    n, t = len(prompts), max(1, max(len(c) for c in completions))
    seqs = [p + c for p, c in zip(prompts, completions)]
    s = max(len(x) for x in seqs)
    ids = torch.full((n, s), pad_id, dtype=torch.long, device=dev)
    attn = torch.zeros((n, s), dtype=torch.long, device=dev)
    for i, x in enumerate(seqs):
        ids[i, :len(x)] = torch.tensor(x, device=dev)
        attn[i, :len(x)] = 1
    mask = torch.zeros((n, t), dtype=torch.bool, device=dev)
    target = torch.full((n, t), 0, dtype=torch.long, device=dev)
    where = torch.zeros((n, t), dtype=torch.long, device=dev)  # the position whose logits predict c_t
    for i, (p, c) in enumerate(zip(prompts, completions)):
        mask[i, :len(c)] = True
        target[i, :len(c)] = torch.tensor(c, device=dev)
        where[i] = len(p) - 1 + torch.arange(t, device=dev).clamp(max=max(len(c) - 1, 0))
    parts = decoder_and_head(model)
    rows = torch.arange(n, device=dev).unsqueeze(1)
    if parts is None:
        logits = model(input_ids=ids, attention_mask=attn).logits[rows, where]
    else:
        decoder, head = parts
        hidden = decoder(input_ids=ids, attention_mask=attn).last_hidden_state
        logits = head(hidden[rows, where])
    logp = torch.log_softmax(logits.float() / temperature, dim=-1).gather(-1, target.unsqueeze(-1)).squeeze(-1)
    return logp * mask, mask


@dataclass
class LossOut:
    loss: torch.Tensor
    kl: float  # mean k3 KL per masked token (0 when beta is 0: not computed)
    clip_ratio: float  # share of masked tokens whose ratio was clipped (the min took the clipped term)


def grpo_loss(logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, mask: torch.Tensor,
              loss_type: str = "grpo", epsilon: float = 0.2, beta: float = 0.0,
              ref_logp: torch.Tensor | None = None, max_completion_length: int | None = None) -> LossOut:
    """The loss of the module docstring for logp, old_logp, mask [N, T] and advantages [N]."""
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES}")
    m = mask.to(logp.dtype)
    a = adv.unsqueeze(1)
    rho = torch.exp(logp - old_logp)
    clipped = torch.clamp(rho, 1 - epsilon, 1 + epsilon)
    per_token = -torch.min(rho * a, clipped * a)
    kl = 0.0
    if beta != 0.0:
        if ref_logp is None:
            raise ValueError("beta > 0 needs ref_logp")
        d = ref_logp - logp
        per_token_kl = torch.exp(d) - d - 1
        per_token = per_token + beta * per_token_kl
        kl = float((per_token_kl.detach() * m).sum() / m.sum().clamp(min=1))
    if loss_type == "grpo":
        loss = ((per_token * m).sum(-1) / m.sum(-1).clamp(min=1)).mean()
    elif loss_type == "dr_grpo":
        if max_completion_length is None:
            raise ValueError("dr_grpo needs max_completion_length")
        loss = (per_token * m).sum() / (per_token.shape[0] * max_completion_length)
    else:  # dapo
        loss = (per_token * m).sum() / m.sum().clamp(min=1)
    was_clipped = ((rho * a) > (clipped * a)).detach()  # the min picked the clipped term
    clip = float((was_clipped.to(m.dtype) * m).sum() / m.sum().clamp(min=1))
    return LossOut(loss, kl, clip)
