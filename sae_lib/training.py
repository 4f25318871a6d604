"""One training loop for every SAE family and every objective.

:func:`train_sae` owns what all SAE training shares: batching, Adam, the learning-rate schedule,
gradient clipping, putting the dictionary back on the unit sphere, tracking dead latents, a progress
bar and a history. What is being minimised is an *objective*: :class:`Reconstruction` (MSE plus the
family's own terms) is the default; other objectives (for example end-to-end ones that read a model's
output) plug into the same loop by implementing the small :class:`Objective` protocol.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import Tensor

from .saes import SAE
from .util import integer, positive_int, progress_bar, real_number, seeded_generator


class Objective(Protocol):
    """What :func:`train_sae` minimises. ``__call__`` returns named loss terms (summed into the loss)
    and the codes ``z`` of the batch (used to track which latents fire)."""

    def check_data(self, sae: SAE, data: Tensor) -> None: ...

    def initialize(self, sae: SAE, data: Tensor) -> None: ...

    def __call__(self, sae: SAE, batch: Tensor, dead_mask: Tensor) -> tuple[dict[str, Tensor], Tensor]: ...


class Reconstruction:
    """The local objective: mean squared error between ``x`` and ``x_hat``, plus the family's terms
    (L1 for :class:`~sae_lib.ReLUSAE`, AuxK for :class:`~sae_lib.TopKSAE`, nothing for MP)."""

    def check_data(self, sae: SAE, data: Tensor) -> None:
        if not isinstance(data, Tensor) or data.ndim != 2 or data.shape[1] != sae.d_in:
            shape = tuple(data.shape) if isinstance(data, Tensor) else type(data).__name__
            raise ValueError(f"training data must be a (N, d_in={sae.d_in}) tensor of activations; got {shape}")
        if not data.is_floating_point():
            raise TypeError(f"training data must be floating point, got dtype {data.dtype}")
        # Checked in the SAE's dtype, as the batches will be (1e300 is finite in float64 only), in chunks
        # so that a cast never copies all the data at once.
        dtype = sae.W_dec.dtype
        if bad := sum((~torch.isfinite(part.to(dtype))).sum().item() for part in data.split(1 << 16)):
            cast = f" once cast from {data.dtype} to the SAE's {dtype}" if data.dtype != dtype else ""
            raise ValueError(f"training data contains {bad} NaN or infinite values{cast}; clean them first")

    def activation_sample(self, data: Tensor) -> Tensor:
        """The rows an initialisation reads: the first 100,000."""
        return data[: 100_000]

    @torch.no_grad()
    def initialize(self, sae: SAE, data: Tensor) -> None:
        """Start the pre-bias at the data mean, so the codes only have to explain deviations from it."""
        sample = self.activation_sample(data).to(sae.b_dec.device, sae.b_dec.dtype)
        sae.b_dec.copy_(sample.mean(0))

    def __call__(self, sae: SAE, batch: Tensor, dead_mask: Tensor):
        x_hat, z = sae(batch)
        terms = {"mse": (x_hat - batch).pow(2).mean()}
        terms.update(sae.extra_losses(batch, x_hat, z, dead_mask))
        return terms, z


DAMPED_STEERING = {"rate": 0.05, "smoothing": 0.5, "gain": 1.0}  # TargetL0's settings that settle fast
FAST_STEERING = {"rate": 0.2, "smoothing": 0.9, "gain": 0.0}  # the first e2e SAEs' rule: it oscillates


class TargetL0:
    """An objective for a :class:`~sae_lib.ReLUSAE` (reconstruction unless ``inner`` says otherwise, e.g.
    an :class:`~sae_lib.e2e.EndToEnd`), with its L1 coefficient steered to a target L0.

    The L1 weight that gives a wanted sparsity depends on the data's scale and on the model, so a value
    tuned by hand for one model is wrong for the next. This rule finds it during training instead.

    * Start where the scale says: a latent stays on while the MSE gain of its coefficient beats the
      penalty, ``(2/d)·c > λ``, and with ``L0`` active latents a coefficient is about ``‖x − x̄‖/√L0``.
      So ``λ₀ = 2·median‖x − x̄‖ / (d·√target)``. And start sparse: each latent's encoder bias is set so
      that it fires on ``target / n_latents`` of a sample of the data, so the first step already has
      L0 ≈ target. (Without this, Adam moves a bias by about one learning rate per step, and a bias
      must travel ``λd/2``, tens of units on a real residual stream: a short run stays dense.)
    * Steer: for the first ``adapt_steps`` steps, with ``e = log(L0 / target)`` (``L0`` a moving average
      over recent batches, ``e`` bounded to ±0.7 so that one bad batch cannot swing ``λ`` far: an
      overshoot would kill latents that a later, lower λ cannot revive), ``log λ = I + gain·e`` where
      ``I += rate·e`` every step. With ``gain = 0`` (the default) that is ``log λ += rate·e``.
    * Then hold ``λ`` fixed, so the rest of training (and the learning-rate decay) has one objective.

    Why ``gain``: ``λ`` does not move L0 at once. It moves the encoder's biases, a little per step, so L0
    integrates ``λ``'s error, and steering ``λ`` by the integral of L0's error alone is a loop of two
    integrators, which oscillates. A fast ``rate`` makes it swing for the whole run: measured on
    SmolLM2 (``bench/steer_l0.py``), :data:`FAST_STEERING` (``rate=0.2``) swung L0 between 6 and 65 while
    ``λ`` moved over a factor of 75, so where L0 ends depends on the step training stops at. The
    proportional term ``gain·e`` damps it (:data:`DAMPED_STEERING` held L0 between 19 and 22 there).

    ``history`` keeps ``λ`` at every step, and ``l0_history`` each training batch's L0. One run replaces a
    bisection of several runs. Fine-tuning a trained SAE (``train_sae(..., init_b_dec=False)``) skips
    the start: ``λ`` is steered from the SAE's own ``l1_coeff``."""

    def __init__(self, target_l0: float, adapt_steps: int, *, rate: float = 0.05, smoothing: float = 0.9,
                 gain: float = 0.0, inner: Objective | None = None):
        self.target = real_number("target_l0", target_l0, low=0, low_open=True)
        self.adapt_steps = positive_int("adapt_steps", adapt_steps)
        self.rate = real_number("rate", rate, low=0, low_open=True)
        self.smoothing = real_number("smoothing", smoothing, low=0, high=1, high_open=True)
        self.gain = real_number("gain", gain, low=0)
        self.inner = inner if inner is not None else Reconstruction()
        if not hasattr(self.inner, "activation_sample"):
            raise TypeError(f"TargetL0 starts λ from the activations' scale: its inner objective needs an "
                            f"activation_sample(data) method, which {type(self.inner).__name__} lacks")
        self.step, self.history, self.l0_history, self.l0 = 0, [], [], None
        self.integral: float | None = None  # I, the steered part of log λ (set from λ at the first step)

    def check_data(self, sae: SAE, data: Tensor) -> None:
        if not hasattr(sae, "l1_coeff"):
            raise ValueError(f"TargetL0 steers an L1 coefficient: it needs a ReLUSAE, got {type(sae).__name__}")
        self.inner.check_data(sae, data)

    @torch.no_grad()
    def initialize(self, sae: SAE, data: Tensor) -> None:
        self.inner.initialize(sae, data)
        sample = self.inner.activation_sample(data).to(sae.W_dec.device, sae.W_dec.dtype)
        scale = (sample - sample.mean(0)).norm(dim=-1).median().item()
        self._set(sae, 2 * scale / (sae.d_in * math.sqrt(self.target)))
        pre = sae.pre_activations(sample[:4096])
        keep = min(1.0, self.target / sae.n_latents)
        sae.b_enc.sub_(pre.quantile(1 - keep, dim=0))
        if not isinstance(self.inner, Reconstruction):
            self._set(sae, self._balanced_l1(sae, data[:8]))

    def _balanced_l1(self, sae: SAE, batch: Tensor) -> float:
        """λ at which the penalty's pull on an active code, λ per row, matches the objective's own push
        (its gradient with respect to that code, median over active codes). The MSE's scale rule above
        does not carry over to an objective read from the model's output (the KL): there it started λ
        tens of times too large, which leaves a short run too sparse."""
        l1, sae.l1_coeff = sae.l1_coeff, 0.0
        with torch.enable_grad():
            terms, z = self.inner(sae, batch.to(sae.W_dec.device), torch.zeros(sae.n_latents, dtype=torch.bool))
            (grad,) = torch.autograd.grad(sum(terms.values()), z)
        sae.l1_coeff = l1
        active = z.detach() > 0
        if not active.any():
            return l1
        rows = z.numel() // sae.n_latents
        return rows * grad[active].abs().median().item()

    @staticmethod
    def _set(sae: SAE, value: float) -> None:
        sae.l1_coeff = value
        sae._config_extras["l1_coeff"] = value

    def __call__(self, sae: SAE, batch: Tensor, dead_mask: Tensor):
        terms, z = self.inner(sae, batch, dead_mask)
        l0 = (z.detach() > 0).sum().item() / max(1, z.numel() // sae.n_latents)
        self.l0_history.append(l0)
        if self.step < self.adapt_steps:
            self.l0 = l0 if self.l0 is None else self.smoothing * self.l0 + (1 - self.smoothing) * l0
            error = min(max(math.log(max(self.l0, 1e-3) / self.target), -0.7), 0.7)
            if self.integral is None:
                if not sae.l1_coeff > 0:
                    raise ValueError(f"TargetL0 steers λ by factors, so it must start above 0, not {sae.l1_coeff}")
                self.integral = math.log(sae.l1_coeff)
            self.integral += self.rate * error
            self._set(sae, math.exp(self.integral + self.gain * error))
        self.history.append(sae.l1_coeff)
        self.step += 1
        return terms, z


@dataclass
class History:
    """What happened during training, one entry per step."""

    loss: list[float] = field(default_factory=list)
    terms: dict[str, list[float]] = field(default_factory=dict)
    lr: list[float] = field(default_factory=list)
    dead: list[int] = field(default_factory=list)  # latents silent for the last `dead_window` samples
    seconds: float = 0.0

    def final(self, key: str = "loss", window: int = 50, *, median: bool = False) -> float:
        """Mean of the last ``window`` steps of ``loss`` or of a named term (less noisy than the last step).

        ``median=True`` takes their median instead, which one batch holding a rare huge activation (an
        attention sink in a language model) cannot move."""
        values = self.loss if key == "loss" else self.terms[key]
        tail = values[-window:]
        return statistics.median(tail) if median else sum(tail) / len(tail)


def lr_factor(step: int, steps: int, schedule: str, warmup: float, decay: float, final_lr_frac: float) -> float:
    """Multiplier of the base learning rate at ``step`` (0-based).

    ``wsd``: linear warm-up, constant, then linear decay to ``final_lr_frac`` over the last ``decay``
    fraction of the steps (the MP-SAE paper's schedule). ``cosine``: warm-up then cosine decay to
    ``final_lr_frac`` (the e2e paper's). ``constant``: warm-up then flat.
    """
    n_warm = int(warmup * steps)
    if step < n_warm:
        return (step + 1) / n_warm
    if schedule == "constant":
        return 1.0
    if schedule == "wsd":
        n_decay = int(decay * steps)
        start = steps - n_decay
        if n_decay == 0 or step < start:
            return 1.0
        return 1.0 - (1.0 - final_lr_frac) * min(1.0, (step - start + 1) / n_decay)
    if schedule == "cosine":
        progress = min(1.0, (step - n_warm) / max(1, steps - n_warm))
        return final_lr_frac + (1 - final_lr_frac) * 0.5 * (1 + math.cos(math.pi * progress))
    raise ValueError(f"unknown schedule {schedule!r}; use 'wsd', 'cosine' or 'constant'")


SCHEDULES = ("wsd", "cosine", "constant")
LOSS_GROWTH_LIMIT = 1e4
""":func:`train_sae` stops once the loss exceeds this multiple of its first step's value. Training should
lower the loss; four orders of magnitude above where it started means it diverges (usually a learning
rate too large for the data's scale) long before the loss overflows to inf."""


def check_schedule(schedule: str, warmup, decay, final_lr_frac) -> tuple[float, float, float]:
    """Validate :func:`lr_factor`'s settings once, before training (it runs every step, unchecked)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; use 'wsd', 'cosine' or 'constant'")
    warmup = real_number("warmup (the fraction of steps spent warming up)", warmup, low=0, high=1, high_open=True)
    decay = real_number("decay (the fraction of steps spent decaying)", decay, low=0, high=1)
    final_lr_frac = real_number("final_lr_frac", final_lr_frac, low=0, high=1)
    if schedule == "wsd" and warmup + decay > 1:
        raise ValueError(f"warmup + decay must be at most 1 for the wsd schedule (they are fractions of the "
                         f"same steps); got {warmup} + {decay}")
    return warmup, decay, final_lr_frac


def check_betas(betas) -> tuple[float, float]:
    """Adam's two decay rates, each in [0, 1): at 1 its bias correction divides by zero."""
    if isinstance(betas, (str, bytes)) or not hasattr(betas, "__len__") or len(betas) != 2:
        raise ValueError(f"betas must be a pair (beta1, beta2), each in [0, 1); got {betas!r}")
    return tuple(real_number(f"betas[{i}]", b, low=0, high=1, high_open=True) for i, b in enumerate(betas))


class Adam:
    """Adam with exactly the arithmetic of ``torch.optim.Adam`` (no weight decay or amsgrad), minus its bookkeeping.

    ``torch.optim.Adam`` is general (parameter groups, state dicts, step counters kept as tensors, several
    kernels to choose from), and that generality costs about 25 small tensor operations per parameter and
    step, against 7 here. For the tiny SAEs of chapters 2-5, where every operation costs microseconds of
    overhead whatever its size, that was a fifth of a training step. This class performs torch's
    operations in torch's order, so it gives the same numbers (``tests/test_training.py`` checks that
    they are equal). Like torch's, it skips a parameter without a gradient and counts steps per parameter.
    """

    def __init__(self, params: list[Tensor], betas: tuple[float, float], eps: float = 1e-8):
        self.params, self.betas, self.eps = params, betas, eps
        self.steps = [0] * len(params)
        self.exp_avg = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in params]
        self.exp_avg_sq = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in params]

    @torch.no_grad()
    def step(self, lr: float) -> None:
        beta1, beta2 = self.betas
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            self.steps[i] += 1
            self.exp_avg[i].lerp_(p.grad, 1 - beta1)
            self.exp_avg_sq[i].mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
            step_size = lr / (1 - beta1 ** self.steps[i])
            denominator = (self.exp_avg_sq[i].sqrt() / math.sqrt(1 - beta2 ** self.steps[i])).add_(self.eps)
            p.addcdiv_(self.exp_avg[i], denominator, value=-step_size)


@torch.no_grad()
def clip_grad_norm_(params: list[Tensor], max_norm: float) -> None:
    """``torch.nn.utils.clip_grad_norm_`` for the 2-norm, the same operations without its generic dispatch."""
    grads = [p.grad for p in params if p.grad is not None]
    if grads:
        total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
        scale = torch.clamp(max_norm / (total + 1e-6), max=1.0)
        for g in grads:
            g.mul_(scale)


def train_sae(
    sae: SAE,
    data: Tensor,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int = 0,
    objective: Objective | None = None,
    schedule: str = "wsd",
    warmup: float = 0.05,
    decay: float = 0.2,
    final_lr_frac: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.999),
    grad_clip: float | None = 1.0,
    dead_window: int = 100_000,
    init_b_dec: bool = True,
    progress: bool = True,
    desc: str | None = None,
) -> History:
    """Train ``sae`` on the rows of ``data`` and return its :class:`History`.

    ``data`` is whatever the objective reads, one example per row: a (N, d_in) tensor of activations
    for the default :class:`Reconstruction`. Batches are drawn without replacement, reshuffled each
    epoch, in an order fixed by ``seed``; ``seed`` also seeds torch's global generator, so a run is
    reproducible on CPU. A latent counts as dead once it has not fired for ``dead_window`` samples.
    Training stops with an error as soon as the loss is not finite, or grows past
    :data:`LOSS_GROWTH_LIMIT` times its first value. ``progress=False`` hides the bar (so does the
    environment variable ``TQDM_DISABLE=1``, which the book's build sets).

    Every setting is checked first; a nonsense one is a ValueError or TypeError naming it and its range.
    """
    steps, batch_size = positive_int("steps", steps), positive_int("batch_size", batch_size)
    lr, seed = real_number("lr", lr, low=0, low_open=True), integer("seed", seed)
    warmup, decay, final_lr_frac = check_schedule(schedule, warmup, decay, final_lr_frac)
    betas = check_betas(betas)
    if grad_clip is not None:
        grad_clip = real_number("grad_clip (None for no clipping)", grad_clip, low=0, low_open=True)
    dead_window = positive_int("dead_window", dead_window)
    objective = objective if objective is not None else Reconstruction()
    objective.check_data(sae, data)
    if batch_size > len(data):
        raise ValueError(f"batch_size={batch_size} is larger than the data ({len(data)} rows)")

    torch.manual_seed(seed)
    order_gen = seeded_generator(seed)
    device = sae.W_dec.device
    if init_b_dec:
        objective.initialize(sae, data)
    sae.renormalize_()
    params = [p for p in sae.parameters() if p.requires_grad]
    optimizer = Adam(params, betas)

    history = History()
    since_fired = torch.zeros(sae.n_latents, dtype=torch.long, device=device)
    order, cursor = torch.randperm(len(data), generator=order_gen), 0
    bar = progress_bar(range(steps), desc=desc or f"training {type(sae).__name__}", show=progress)
    start = time.perf_counter()
    sae.train()
    for step in bar:
        if cursor + batch_size > len(order):
            order, cursor = torch.randperm(len(data), generator=order_gen), 0
        batch = data[order[cursor : cursor + batch_size]].to(device, non_blocking=True)
        if batch.is_floating_point():  # activations (maybe float16 from a store) in the SAE's dtype; tokens stay ids
            batch = batch.to(sae.W_dec.dtype)
        cursor += batch_size

        step_lr = lr * lr_factor(step, steps, schedule, warmup, decay, final_lr_frac)
        dead_mask = since_fired >= dead_window
        terms, z = objective(sae, batch, dead_mask)
        loss = sum(terms.values())
        values = torch.stack([loss.detach(), *(t.detach() for t in terms.values())]).tolist()
        if step == 0:
            first_loss = values[0]
        if not math.isfinite(values[0]) or 0 < LOSS_GROWTH_LIMIT * first_loss < values[0]:
            detail = ", ".join(f"{k}={v:.4g}" for k, v in zip(terms, values[1:]))
            what = f"the loss is {values[0]}" if not math.isfinite(values[0]) else (
                f"the loss grew from {first_loss:.4g} to {values[0]:.4g}, over {LOSS_GROWTH_LIMIT:g} times its first value")
            raise FloatingPointError(
                f"training stopped at step {step}: {what} ({detail}). "
                "Lower the learning rate, or check the data and the SAE's initialisation."
            )

        history.lr.append(step_lr)
        for p in params:
            p.grad = None
        loss.backward()
        if grad_clip is not None:
            clip_grad_norm_(params, grad_clip)
        optimizer.step(step_lr)
        sae.renormalize_()

        with torch.no_grad():
            fired = z.detach().reshape(-1, sae.n_latents).abs().amax(0) > 0  # a column-wise max: cheaper than any()
            since_fired += z.numel() // sae.n_latents
            since_fired.masked_fill_(fired, 0)
        history.loss.append(values[0])
        for name, value in zip(terms, values[1:]):
            history.terms.setdefault(name, []).append(value)
        history.dead.append(int(dead_mask.sum()))
        if step % max(1, steps // 50) == 0 or step == steps - 1:
            bar.set_postfix(loss=f"{values[0]:.4g}", dead=history.dead[-1], refresh=False)
    sae.eval()
    history.seconds = time.perf_counter() - start
    return history
