"""Monte Carlo targets shared between two runs, for tests that compare two code paths.

Every Fisher target is an inverse-CDF draw: the first prefix sum of the softmax above u * total.
Two code paths that compute the same logits with a different order of float operations (chunked
or whole matrix products, oneDNN or BLAS, fused or unfused output layer, bfloat16 or float32)
give prefix sums that differ in the last bits, and a uniform that lands within that difference of
a boundary draws the neighbouring token on one path only. One such draw changes the embedding by
a whole squared gradient, far more than any rounding tolerance, and whether it happens depends on
the machine. So a comparison records the targets of the first run and feeds the same targets to
the second, after checking that each of them is a valid draw of the second run's own softmax with
the same uniform when the prefix sums may be off by `tol`.
"""

from __future__ import annotations

import torch

from divcoef_assets.core import fused, task2vec


def off_the_cdf(probs: torch.Tensor, uniforms: torch.Tensor, draws: torch.Tensor, tol: float) -> torch.Tensor:
    """Rows whose draw is not the inverse-CDF draw of `probs` [c, V] with `uniforms` [c], even with
    every prefix sum moved by up to `tol`: a correct draw t has cdf[t - 1] <= u * total < cdf[t]."""
    cdf = probs.detach().double().cumsum(1)
    threshold = uniforms.reshape(-1, 1).double() * cdf[:, -1:]
    t = draws.reshape(-1, 1).long()
    above = cdf.gather(1, t)
    below = torch.where(t > 0, cdf.gather(1, (t - 1).clamp(min=0)), torch.zeros_like(above))
    last = t == probs.shape[1] - 1  # the draw is clamped to V - 1: no upper bound
    bad = (threshold < below - tol) | ((threshold >= above + tol) & ~last)
    return bad.squeeze(1).nonzero().squeeze(1)


class SharedDraws:
    """Records the Fisher targets the engine draws, then replays them in a second run.

    Both the fused output layer and the unfused path (and `core.reference`, through
    `task2vec._sample`) draw with `fused.sample_inverse_cdf`; this wraps it. Before `replay()`
    each draw is recorded; after it, each call takes the next recorded draws instead of its own,
    checks that they fit its own prefix sums within `tol` and that the rows match in number, and
    `finish()` checks that the second run used every recorded draw.
    """

    def __init__(self, monkeypatch, tol: float = 1e-4):
        self.tol = tol
        self.recorded: list[torch.Tensor] = []
        self.tape: torch.Tensor | None = None
        self.cursor = 0
        self.differed = 0  # replayed draws that the second run would have drawn otherwise
        original = fused.sample_inverse_cdf

        def shared(probs, uniforms, cdf_out=None):
            return self._share(probs, uniforms, original(probs, uniforms, cdf_out))

        monkeypatch.setattr(fused, "sample_inverse_cdf", shared)
        monkeypatch.setattr(task2vec, "sample_inverse_cdf", shared)

    def replay(self) -> None:
        assert self.recorded, "the first run drew nothing"
        self.tape = torch.cat([d.cpu() for d in self.recorded])
        self.cursor = 0

    def _share(self, probs, uniforms, drawn):
        if self.tape is None:
            self.recorded.append(drawn.clone())
            return drawn
        n = drawn.shape[0]
        assert self.cursor + n <= self.tape.numel(), "the second run draws more targets than the first"
        want = self.tape[self.cursor : self.cursor + n].to(drawn.device)
        self.cursor += n
        bad = off_the_cdf(probs, uniforms, want, self.tol)
        assert bad.numel() == 0, f"{bad.numel()} of {n} recorded targets are not draws of this run's softmax (rows {bad[:5].tolist()})"
        self.differed += int((want != drawn).sum())
        return want

    def finish(self) -> int:
        """Checks the second run used every recorded draw; returns how many it drew differently."""
        assert self.tape is not None and self.cursor == self.tape.numel(), "the second run drew fewer targets than the first"
        return self.differed
