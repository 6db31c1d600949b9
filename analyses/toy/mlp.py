"""The MLP of the benchmark's learned experts: eps_theta(z, t) in 2D, and two networks evaluated
in one batched pass (AMDM and the product-of-experts samplers always need both)."""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["MLP", "pair_forward"]


class MLP(torch.nn.Module):
    """eps_theta(z, t): a SiLU MLP on (z, Fourier features of z, features of t/T).

    The Fourier features sin/cos(pi 2^j z_i), j < ``n_zfreq`` (by the double-angle recursion),
    let a small network resolve the ring's 0.03-wide modes at low noise. The time features
    enter the first layer linearly, so at a fixed t they fold into its bias (``hidden``).
    Parameters are initialised from an explicit generator (the global RNG is never touched)."""

    def __init__(self, T: int, width: int = 48, depth: int = 3, n_freq: int = 8, n_zfreq: int = 5, generator=None):
        super().__init__()
        self.T, self.n_zfreq = T, n_zfreq
        self.n_z = 2 + 4 * n_zfreq
        dims = [self.n_z + 2 * n_freq + 1] + [width] * depth + [2]
        self.weights = torch.nn.ParameterList()
        self.biases = torch.nn.ParameterList()
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            bound = 1 / math.sqrt(a)
            w = torch.empty(b, a).uniform_(-bound, bound, generator=generator)
            if i == len(dims) - 2:
                w = w * 0.1
            self.weights.append(torch.nn.Parameter(w))
            self.biases.append(torch.nn.Parameter(torch.zeros(b)))
        self.register_buffer("freqs", math.pi * 2.0 ** torch.arange(n_freq, dtype=torch.float32))

    def z_features(self, z: torch.Tensor) -> torch.Tensor:
        """[z, sin(pi 2^j z), cos(pi 2^j z)], j < n_zfreq, ``(..., 2 + 4 n_zfreq)``."""
        out = [z]
        if self.n_zfreq:
            sn, cs = torch.sin(math.pi * z), torch.cos(math.pi * z)
            out += [sn, cs]
            for _ in range(self.n_zfreq - 1):
                sn, cs = 2 * sn * cs, 1 - 2 * sn * sn
                out += [sn, cs]
        return torch.cat(out, dim=-1)

    def t_features(self, t: torch.Tensor) -> torch.Tensor:
        """[tau, sin(tau f_j), cos(tau f_j)] for tau = (t + 1) / T, ``(B, 1 + 2 n_freq)``."""
        tau = (t.to(torch.float32) + 1) / self.T
        a = tau[:, None] * self.freqs
        return torch.cat([tau[:, None], torch.sin(a), torch.cos(a)], dim=1)

    def forward(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``z (B, 2)`` float32, ``t (B,)`` integer timesteps -> eps ``(B, 2)``."""
        h = torch.cat([self.z_features(z), self.t_features(t)], dim=1)
        return self.hidden(h, None)

    def first_bias(self, t: int) -> torch.Tensor:
        """The first layer's bias with the features of a fixed timestep t folded in."""
        g = self.t_features(torch.tensor([int(t)]))[0]
        return self.biases[0] + self.weights[0][:, self.n_z:] @ g

    def hidden(self, h: torch.Tensor, t: int | None) -> torch.Tensor:
        """The layers from the features on: ``h`` holds z- and t-features (t None) or only
        the z-features of points at one timestep t."""
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            if i == 0 and t is not None:
                w, b = w[:, :self.n_z], self.first_bias(t)
            h = torch.nn.functional.linear(h, w, b)
            if i < len(self.weights) - 1:
                h = torch.nn.functional.silu(h)
        return h


def _pair_weights(n1: MLP, n2: MLP, t: int):
    """The two networks' layers stacked for one batched evaluation at timestep t: weights
    ``(2, in, out)`` (the first restricted to the z-features) and biases ``(2, 1, out)`` (the
    first with t folded in); None when the networks differ in shape."""
    if [w.shape for w in n1.weights] != [w.shape for w in n2.weights] or n1.n_z != n2.n_z:
        return None
    cache = n1.__dict__.setdefault("_pair_cache", {})  # parameters are frozen after training
    if (id(n2), t) in cache:
        return cache[id(n2), t]
    Ws = [torch.stack([a.detach(), b.detach()]).transpose(1, 2) for a, b in zip(n1.weights, n2.weights)]
    Ws[0] = Ws[0][:, :n1.n_z]
    Bs = [torch.stack([a.detach(), b.detach()])[:, None, :] for a, b in zip(n1.biases, n2.biases)]
    Bs[0] = torch.stack([n1.first_bias(t), n2.first_bias(t)])[:, None, :]
    cache[id(n2), t] = (Ws, Bs)
    return Ws, Bs


@torch.no_grad()
def pair_forward(n1: MLP, n2: MLP, z1: np.ndarray, z2: np.ndarray | None,
                 t: int) -> tuple[np.ndarray, np.ndarray] | None:
    """``(n1(z1, t), n2(z2, t))`` as float64 ``(N, 2)`` arrays in one batched forward pass
    (``z2 = None``: both at ``z1``) at a timestep ``t >= 0``; None when the two networks differ
    in shape (evaluate them one by one then)."""
    stacked = _pair_weights(n1, n2, int(t))
    if stacked is None:
        return None
    Ws, Bs = stacked
    f1 = n1.z_features(torch.from_numpy(np.ascontiguousarray(z1, dtype=np.float32)))
    if z2 is None:
        h = f1.expand(2, *f1.shape)
    else:
        h = torch.stack([f1, n2.z_features(torch.from_numpy(np.ascontiguousarray(z2, dtype=np.float32)))])
    for i, (w, b) in enumerate(zip(Ws, Bs)):
        h = torch.baddbmm(b, h, w)
        if i < len(Ws) - 1:
            h = torch.nn.functional.silu(h)
    out = h.numpy().astype(np.float64)
    return out[0], out[1]
