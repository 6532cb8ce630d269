"""The speculative-sampling rule, as pure tensor functions (Leviathan et al. 2023; Chen et al. 2023).

A draft token d is proposed from a cheap distribution q (here: the MTP module's), and the
main model's distribution p at the same position is computed in the verification forward.
Keeping d with probability min(1, p(d) / q(d)) and, on rejection, drawing from the residual
max(0, p - q) / sum(max(0, p - q)) makes the emitted token distributed exactly as p, whatever
q is. With one-hot p and q (temperature 0) the rule reduces to "keep the draft iff it is the
main model's argmax, else emit the argmax", so greedy speculative output equals greedy output.

Shapes: R rows (one per sequence), V vocabulary entries. Distributions are rows that sum to 1
(after temperature, top-k and top-p; see `trainer.generate.sampling_probs`).
"""

from __future__ import annotations

import torch
from torch import Tensor


def sample_from(probs: Tensor, u: Tensor) -> Tensor:
    """Inverse-CDF sampling: probs (R, V), u (R,) uniform in [0, 1) -> token ids (R,).

    Driven by caller-supplied uniforms so that each row's randomness comes from its own
    generator. The CDF is accumulated in float64, so u * total stays below the total and a
    token of probability zero is never returned (searchsorted with right=True skips flat steps).
    """
    cdf = probs.double().cumsum(dim=-1)  # (R, V)
    target = (u.double() * cdf[:, -1]).unsqueeze(-1)  # (R, 1)
    return torch.searchsorted(cdf, target, right=True).squeeze(-1).clamp_max(probs.shape[-1] - 1)


def residual_distribution(p: Tensor, q: Tensor) -> Tensor:
    """max(0, p - q), renormalised: what a rejected draft is replaced with. (R, V) -> (R, V).

    A row where p <= q everywhere (only possible when p == q, since both sum to one) never
    rejects; it gets p back so the result is still a distribution.
    """
    residual = (p - q).clamp_min(0.0)  # (R, V)
    mass = residual.sum(dim=-1, keepdim=True)  # (R, 1)
    return torch.where(mass > 0, residual / mass.clamp_min(torch.finfo(mass.dtype).tiny), p)


def accept_draft(
    p: Tensor, q: Tensor, draft: Tensor, u_accept: Tensor, u_resample: Tensor
) -> tuple[Tensor, Tensor]:
    """One verification: (accepted (R,) bool, emitted token (R,)).

    p: (R, V) main model's distribution at the draft's position; q: (R, V) the distribution the
    draft was sampled from; draft: (R,) ids; u_accept, u_resample: (R,) uniforms in [0, 1).
    The emitted token is the draft where accepted and a residual sample elsewhere; either way
    it is distributed as p.
    """
    p_d = p.gather(-1, draft.unsqueeze(-1)).squeeze(-1)  # (R,)
    q_d = q.gather(-1, draft.unsqueeze(-1)).squeeze(-1)  # (R,) > 0: the draft was drawn from q
    # u < p/q without the division: q_d > 0, and p/q >= 1 always accepts since u < 1.
    accepted = u_accept * q_d < p_d
    replacement = sample_from(residual_distribution(p, q), u_resample)  # (R,)
    return accepted, torch.where(accepted, draft, replacement)
