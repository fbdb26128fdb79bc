"""Training losses. The full softmax is computed in row chunks with its gradient formed on the fly,
so the (positions x items) logits never exist at once: cache-sized chunks run about twice as fast
on CPU as the plain `cross_entropy(h @ E.T)`, and memory stays O(chunk x items)."""

from __future__ import annotations

import torch
from torch.nn import functional as F


class _ChunkedLinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h: torch.Tensor, table: torch.Tensor, targets: torch.Tensor, chunk: int) -> torch.Tensor:
        grad_h = torch.empty_like(h)
        grad_table = torch.zeros_like(table)
        total = h.new_zeros(())
        rows = torch.arange(chunk, device=h.device)
        for lo in range(0, len(h), chunk):
            hc, tc = h[lo : lo + chunk], targets[lo : lo + chunk]  # (c, d), (c,)
            logits = hc @ table.T  # (c, N)
            lse = torch.logsumexp(logits, dim=1)  # (c,)
            total += (lse - logits.gather(1, tc[:, None]).squeeze(1)).sum()
            probs = logits.sub_(lse[:, None]).exp_()  # softmax, in place
            probs[rows[: len(tc)], tc] -= 1.0  # d loss / d logits = softmax - one_hot
            grad_h[lo : lo + chunk] = probs @ table
            grad_table.addmm_(probs.T, hc)
        n = max(len(h), 1)
        ctx.save_for_backward(grad_h / n, grad_table / n)
        return total / n

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        grad_h, grad_table = ctx.saved_tensors
        return grad_h * grad_output, grad_table * grad_output, None, None


def full_cross_entropy(h: torch.Tensor, table: torch.Tensor, targets: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
    """Mean softmax cross-entropy of (P, d) states against all rows of table (N, d); targets in 0..N-1."""
    if not (h.requires_grad or table.requires_grad):
        return F.cross_entropy(h @ table.T, targets)
    return _ChunkedLinearCrossEntropy.apply(h, table, targets, chunk)


def bce_loss(pos_logit: torch.Tensor, neg_logit: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of positives (label 1) against their sampled negatives (label 0)."""
    return F.softplus(-pos_logit).mean() + F.softplus(neg_logit).mean()
