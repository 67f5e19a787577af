"""GRPO arithmetic (train/grpo_loss.py) against a by-hand computation in plain Python on a fixed batch:
advantages, the clipped loss for grpo / dr_grpo / dapo, the k3 KL term, truncation masking, gradients;
and the training model's completion log-probs against one unpadded forward per row."""

import math

import pytest
import torch

from tunelab.train.grpo_loss import completion_logprobs, group_advantages, grpo_loss

# 2 prompts x G = 3 completions, T = 3 token slots; row lengths 3, 2, 1 | 3, 3, 2
REWARDS = [1.0, 0.0, 0.5, 2.0, 2.0, 2.0]  # the second group has no spread: A = 0 there
LENGTHS = [3, 2, 1, 3, 3, 2]
LOGP = [[-0.5, -1.0, -2.0], [-0.3, -0.7, 0.0], [-1.2, 0.0, 0.0],
        [-0.1, -0.2, -0.3], [-2.0, -1.5, -0.5], [-0.9, -0.4, 0.0]]
OLD = [[-0.9, -0.8, -2.0], [-0.3, -0.1, 0.0], [-1.0, 0.0, 0.0],  # ratios off 1: some get clipped
       [-0.1, -0.5, -0.3], [-2.0, -1.0, -0.5], [-0.2, -0.4, 0.0]]
REF = [[-0.6, -1.1, -1.9], [-0.2, -0.9, 0.0], [-1.0, 0.0, 0.0],
       [-0.3, -0.2, -0.1], [-1.7, -1.5, -0.6], [-1.0, -0.2, 0.0]]
G, L_MAX, EPS = 3, 4, 0.2


def by_hand_advantages(rewards, g, scale=True):
    out = []
    for s in range(0, len(rewards), g):
        grp = rewards[s:s + g]
        mean = sum(grp) / g
        std = math.sqrt(sum((r - mean) ** 2 for r in grp) / (g - 1))
        out += [(r - mean) / (std + 1e-4) if scale else r - mean for r in grp]
    return out


def by_hand_loss(adv, lengths, loss_type, beta=0.0, masked_rows=()):
    per_row, tokens = [], 0
    for i, n in enumerate(lengths):
        n_eff = 0 if i in masked_rows else n
        terms = []
        for t in range(n_eff):
            rho = math.exp(LOGP[i][t] - OLD[i][t])
            clipped = min(max(rho, 1 - EPS), 1 + EPS)
            term = -min(rho * adv[i], clipped * adv[i])
            if beta:
                d = REF[i][t] - LOGP[i][t]
                term += beta * (math.exp(d) - d - 1)
            terms.append(term)
        per_row.append(terms)
        tokens += n_eff
    n = len(lengths)
    if loss_type == "grpo":
        return sum(sum(x) / max(1, len(x)) for x in per_row) / n
    if loss_type == "dr_grpo":
        return sum(sum(x) for x in per_row) / (n * L_MAX)
    return sum(sum(x) for x in per_row) / max(1, tokens)


def tensors(masked_rows=()):
    mask = torch.tensor([[t < n and i not in masked_rows for t in range(3)] for i, n in enumerate(LENGTHS)])
    return torch.tensor(LOGP, dtype=torch.float64), torch.tensor(OLD, dtype=torch.float64), mask


def test_advantages_by_hand():
    r = torch.tensor(REWARDS, dtype=torch.float64)
    adv, std = group_advantages(r, G)
    assert adv.tolist() == pytest.approx(by_hand_advantages(REWARDS, G), abs=1e-12)
    assert adv[3:].abs().max() == 0 and std[3:].abs().max() == 0  # equal rewards: no signal
    assert std[0] == pytest.approx(0.5)  # sample std of (1, 0, 0.5)
    flat, _ = group_advantages(r, G, scale=False)  # dr_grpo
    assert flat.tolist() == pytest.approx(by_hand_advantages(REWARDS, G, scale=False), abs=1e-12)


@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo", "dapo"])
@pytest.mark.parametrize("beta", [0.0, 0.04])
@pytest.mark.parametrize("masked", [(), (0, 4)])
def test_loss_by_hand(loss_type, beta, masked):
    scale = loss_type != "dr_grpo"
    adv_list = by_hand_advantages(REWARDS, G, scale)
    adv, _ = group_advantages(torch.tensor(REWARDS, dtype=torch.float64), G, scale)
    logp, old, mask = tensors(masked)
    ref = torch.tensor(REF, dtype=torch.float64)
    out = grpo_loss(logp, old, adv, mask, loss_type, EPS, beta, ref if beta else None, L_MAX)
    assert float(out.loss) == pytest.approx(by_hand_loss(adv_list, LENGTHS, loss_type, beta, masked), abs=1e-12)
    if beta:
        kls = [math.exp(REF[i][t] - LOGP[i][t]) - (REF[i][t] - LOGP[i][t]) - 1
               for i, n in enumerate(LENGTHS) if i not in masked for t in range(n)]
        assert out.kl == pytest.approx(sum(kls) / len(kls), abs=1e-12)
    # clipped: the min took the clipped term (nonzero advantage, ratio outside [0.8, 1.2] on the wrong side)
    clipped = [(rho := math.exp(LOGP[i][t] - OLD[i][t])) * adv_list[i] > min(max(rho, 1 - EPS), 1 + EPS) * adv_list[i]
               for i, n in enumerate(LENGTHS) if i not in masked for t in range(n)]
    assert out.clip_ratio == pytest.approx(sum(clipped) / len(clipped))
    assert 0 < out.clip_ratio < 1  # the fixture really exercises clipping


def test_masked_rows_change_the_loss():
    adv, _ = group_advantages(torch.tensor(REWARDS, dtype=torch.float64), G)
    full = grpo_loss(*tensors()[:2], adv, tensors()[2], "grpo", EPS).loss
    cut = grpo_loss(*tensors((0,))[:2], adv, tensors((0,))[2], "grpo", EPS).loss
    assert abs(float(full) - float(cut)) > 1e-3


@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo", "dapo"])
def test_on_policy_gradient_is_advantage_weighted(loss_type):
    """One step per rollout: old = logp.detach(), rho = 1, d loss / d logp_t = -A_i x the aggregation weight."""
    logp, _, mask = tensors()
    logp = logp.clone().requires_grad_(True)
    scale = loss_type != "dr_grpo"
    adv, _ = group_advantages(torch.tensor(REWARDS, dtype=torch.float64), G, scale)
    out = grpo_loss(logp, logp.detach(), adv, mask, loss_type, EPS, 0.0, None, L_MAX)
    assert float(out.loss.detach()) == pytest.approx(-sum(a * (n if loss_type != "grpo" else 1)
                                                for a, n in zip(adv.tolist(), LENGTHS))
                                           / {"grpo": len(LENGTHS), "dr_grpo": len(LENGTHS) * L_MAX,
                                              "dapo": sum(LENGTHS)}[loss_type], abs=1e-12)
    out.loss.backward()
    n = len(LENGTHS)
    for i, length in enumerate(LENGTHS):
        w = {"grpo": 1 / (length * n), "dr_grpo": 1 / (n * L_MAX), "dapo": 1 / sum(LENGTHS)}[loss_type]
        for t in range(3):
            want = -adv[i].item() * w if t < length else 0.0
            assert logp.grad[i, t].item() == pytest.approx(want, abs=1e-12)
    assert out.clip_ratio == 0.0


def test_completion_logprobs_match_one_forward_per_row(tiny_lora):
    model = tiny_lora()
    model.eval()
    prompts = [[1, 5, 9, 13], [1, 7], [1, 5, 9, 13]]
    completions = [[20, 21, 2], [30, 31, 32, 33], [40]]
    logp, mask = completion_logprobs(model, prompts, completions, pad_id=0, temperature=0.7)
    assert mask.tolist() == [[1, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0]]
    for i, (p, c) in enumerate(zip(prompts, completions)):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([p + c])).logits[0].float() / 0.7
        want = torch.log_softmax(logits, -1)[len(p) - 1:len(p) - 1 + len(c)].gather(-1, torch.tensor(c)[:, None])[:, 0]
        torch.testing.assert_close(logp[i, :len(c)].detach(), want, atol=1e-5, rtol=1e-5)
        assert logp[i, len(c):].abs().sum() == 0
