"""One model's reverse step, by the kind of its schedule: DDIM on a VP/VE schedule (eq. 4) or
the Euler step of a rectified flow (eq. 42, App. G). The sampler holds one per model (diffusers'
flow scheduler keeps a step index, so each model has its own scheduler instance) and never
needs to know which kind it steps.

Each step k from ``z (B, *latent_shape)`` and the model's output ``out`` gives

    mu      the step's location: DDIM's reverse-step mean A z + B eps (eq. 4); for a flow the
            deterministic part of the step, z + dt v (or (1 - s_next) x0_hat when sampling
            stochastically), that is A z + B v with ``flow_schedules.flow_coefficients``;
    z_next  mu + sigma xi (xi from the sample's own generators; sigma = 0: z_next = mu);
    x0      the predicted clean latent;
    inp     what multiplies B in mu = A z + B inp: the step's epsilon (``model{i}.eps``) or the
            velocity v (``model{i}.v``).

Under AMDM the radial shift of eq. (7) moves z' towards mu: for a flow, the deterministic location
of the step plays the part of DDIM's mean because it is where the model's step would put the
latent before any noise, the centre of the step's distribution (a point mass when the flow is
deterministic), exactly what mu is for DDIM. Eq. (46) and App. G's "set mu = v" print the
velocity itself as the target (``shift_mean="velocity"``); ``analyses.flow_geometry`` compares.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from amdm_geom.core.flow_schedules import flow_coefficients, flow_stepper, is_flow_scheduler
from amdm_geom.core.schedules import ddim_coefficients, step_epsilon, stepper
from amdm_geom.sampling.rng import draw

__all__ = ["DDIMStep", "FlowStep", "StepResult", "make_step"]


@dataclass
class StepResult:
    """What one model's step produced, each ``(B, *latent_shape)`` in the model's dtype."""

    mu: torch.Tensor
    z_next: torch.Tensor
    x0: torch.Tensor
    inp: torch.Tensor  # eps (DDIM) or v (flow): mu = A z + B inp


class DDIMStep:
    """diffusers' ``DDIMScheduler.step`` (or ``schedules.VESchedule``'s) for one model."""

    kind = "ddim"
    input_name = "eps"

    def __init__(self, model, num_inference_steps: int, ddim_eta: float, who: str = "the model"):
        self.model, self.ddim_eta = model, float(ddim_eta)
        self.scheduler = stepper(model.scheduler, num_inference_steps)
        self.coefficients = ddim_coefficients(model.scheduler, num_inference_steps, ddim_eta)
        self.timesteps = [int(t) for t in self.coefficients["t"].values]
        self.init_noise_sigma = float(self.scheduler.init_noise_sigma)

    def step(self, out: torch.Tensor, k: int, z: torch.Tensor, gens) -> StepResult:
        sched, t = self.scheduler, self.timesteps[k]
        mean = sched.step(out, t, z, eta=self.ddim_eta, variance_noise=torch.zeros_like(z))
        mu = mean.prev_sample
        if self.ddim_eta > 0:  # as diffusers: noise is drawn and added whenever eta > 0
            xi = draw(gens, tuple(z.shape[1:]), z.dtype, z.device)
            z_next = sched.step(out, t, z, eta=self.ddim_eta, variance_noise=xi).prev_sample
        else:
            z_next = mu
        eps = step_epsilon(sched, out, t, z, self.ddim_eta, mean.pred_original_sample)
        return StepResult(mu=mu, z_next=z_next, x0=mean.pred_original_sample, inp=eps)

    def location(self, out: torch.Tensor, k: int, z: torch.Tensor) -> torch.Tensor:
        """mu of eq. (4) for ``out`` at ``z`` (no noise, no random draw)."""
        t = self.timesteps[k]
        return self.scheduler.step(out, t, z, eta=self.ddim_eta, variance_noise=torch.zeros_like(z)).prev_sample

    def step_input(self, out: torch.Tensor, k: int, z: torch.Tensor) -> torch.Tensor:
        """The step's epsilon for ``out`` at ``z`` (the cross terms of eqs. 20-22)."""
        return step_epsilon(self.scheduler, out, self.timesteps[k], z, self.ddim_eta)


class FlowStep:
    """diffusers' ``FlowMatchEulerDiscreteScheduler.step`` for one model (its own instance).

    In the model's dtype up to float32 the state update *is* diffusers' step (which computes in
    float32 and casts back), so one model reproduces diffusers' loop bit for bit; its step index
    is set to k before each step, so the extra evaluations of AMDM (the shift's mean at z')
    never advance it. A float64 model is stepped with the same formula in float64 (diffusers
    would round its latents to float32 at every step), on the scheduler's float32 sigmas."""

    kind = "flow"
    input_name = "v"

    def __init__(self, model, num_inference_steps: int, stochastic: bool | None = None, who: str = "the model"):
        mu = getattr(model, "flow_mu", None)
        self.model = model
        self.scheduler = flow_stepper(model.scheduler, num_inference_steps, stochastic=stochastic, mu=mu, who=who)
        self.coefficients = flow_coefficients(model.scheduler, num_inference_steps, stochastic=stochastic, mu=mu)
        self.stochastic = bool(self.scheduler.config.stochastic_sampling)
        self.timesteps = list(self.scheduler.timesteps)  # 0-d float32 tensors, s * num_train_timesteps
        self.init_noise_sigma = 1.0

    def _sigmas(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.scheduler.sigmas[k], self.scheduler.sigmas[k + 1]

    def step(self, out: torch.Tensor, k: int, z: torch.Tensor, gens) -> StepResult:
        s, s_next = self._sigmas(k)
        wide = z.dtype == torch.float64
        x0 = (z if wide else z.to(torch.float32)) - (s.double() if wide else s) * out
        if not self.stochastic:
            if wide:
                z_next = z + (s_next.double() - s.double()) * out
            else:
                self.scheduler._step_index = k
                z_next = self.scheduler.step(out, self.timesteps[k], z).prev_sample
            return StepResult(mu=z_next, z_next=z_next, x0=x0.to(out.dtype), inp=out)
        mu = ((1.0 - (s_next.double() if wide else s_next)) * x0).to(out.dtype)
        if wide:
            xi = draw(gens, tuple(z.shape[1:]), z.dtype, z.device)
            z_next = (1.0 - s_next.double()) * x0 + s_next.double() * xi
        else:
            self.scheduler._step_index = k
            z_next = self.scheduler.step(out, self.timesteps[k], z, generator=list(gens)).prev_sample
        return StepResult(mu=mu, z_next=z_next, x0=x0.to(out.dtype), inp=out)

    def location(self, out: torch.Tensor, k: int, z: torch.Tensor) -> torch.Tensor:
        """The step's deterministic location for ``out`` at ``z``: z + dt v, or (1 - s_next)
        (z - s v) when stochastic; diffusers' arithmetic (float32, cast back) below float64."""
        s, s_next = self._sigmas(k)
        if z.dtype == torch.float64:
            s, s_next = s.double(), s_next.double()
            return z + (s_next - s) * out if not self.stochastic else (1.0 - s_next) * (z - s * out)
        sample = z.to(torch.float32)
        loc = sample + (s_next - s) * out if not self.stochastic else (1.0 - s_next) * (sample - s * out)
        return loc.to(out.dtype)

    def step_input(self, out: torch.Tensor, k: int, z: torch.Tensor) -> torch.Tensor:
        """The velocity itself (the cross terms of eq. 47)."""
        return out


def make_step(model, num_inference_steps: int, *, ddim_eta: float = 0.0, flow_stochastic: bool | None = None,
              who: str = "the model") -> DDIMStep | FlowStep:
    """The step for ``model``'s scheduler: a ``FlowStep`` for a flow-matching scheduler, else DDIM."""
    if is_flow_scheduler(model.scheduler):
        return FlowStep(model, num_inference_steps, flow_stochastic, who=who)
    return DDIMStep(model, num_inference_steps, ddim_eta, who=who)
