"""The one training loop: it trains, it is reproducible, it refuses bad input, it stops on NaN."""

import math

import pytest
import torch

from sae_lib import MPSAE, ReLUSAE, TopKSAE, evaluate, match_atoms, train_sae
from sae_lib.training import Reconstruction, lr_factor

SETTINGS = dict(steps=300, batch_size=128, lr=3e-3, progress=False)


def make(family, d=12, n=48):
    return {"relu": lambda: ReLUSAE(d, n, l1_coeff=3e-3, seed=0), "topk": lambda: TopKSAE(d, n, 3, seed=0),
            "mp": lambda: MPSAE(d, n, 3, seed=0)}[family]()


@pytest.mark.parametrize("family", ["relu", "topk", "mp"])
def test_training_reduces_loss_and_keeps_unit_atoms(family, toy_data):
    sae = make(family)
    before = evaluate(sae, toy_data.x)["mse"]
    history = train_sae(sae, toy_data.x, seed=0, **SETTINGS)
    after = evaluate(sae, toy_data.x)["mse"]
    assert len(history.loss) == 300 and len(history.lr) == 300 and len(history.dead) == 300
    assert "mse" in history.terms and len(history.terms["mse"]) == 300
    assert after < 0.5 * before
    assert history.final("mse") < history.terms["mse"][0]
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(sae.n_latents))


@pytest.mark.parametrize("family", ["topk", "mp"])
def test_training_recovers_the_true_atoms(family):
    from sae_lib import superposition_data

    data = superposition_data(20_000, n_features=16, d=12, p_active=0.1, seed=0)
    sae = {"topk": TopKSAE(12, 32, 2, seed=0), "mp": MPSAE(12, 32, 2, seed=0)}[family]
    train_sae(sae, data.x, steps=1500, batch_size=256, lr=3e-3, seed=0, progress=False)
    assert match_atoms(sae.W_dec, data.dictionary).fraction_above(0.9) >= 0.9


@pytest.mark.parametrize("family", ["relu", "topk", "mp"])
def test_same_seed_gives_identical_weights(family, toy_data):
    a, b = make(family), make(family)
    train_sae(a, toy_data.x, seed=7, **{**SETTINGS, "steps": 50})
    train_sae(b, toy_data.x, seed=7, **{**SETTINGS, "steps": 50})
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name
    c = make(family)
    train_sae(c, toy_data.x, seed=8, **{**SETTINGS, "steps": 50})
    assert not torch.equal(a.W_dec, c.W_dec)


def test_history_records_named_terms_that_sum_to_the_loss(toy_data):
    history = train_sae(make("relu"), toy_data.x, seed=0, **{**SETTINGS, "steps": 20})
    assert set(history.terms) == {"mse", "l1"}
    for i in range(20):
        assert math.isclose(history.loss[i], history.terms["mse"][i] + history.terms["l1"][i], rel_tol=1e-5)


def test_dead_latents_are_tracked_and_auxk_kicks_in():
    from sae_lib import superposition_data

    data = superposition_data(5000, n_features=8, d=12, p_active=0.2, seed=0)  # far fewer features than latents
    sae = TopKSAE(12, 96, 2, seed=0)
    history = train_sae(sae, data.x, steps=200, batch_size=100, lr=1e-2, seed=0, dead_window=1000, progress=False)
    assert max(history.dead) > 0
    assert "auxk" in history.terms  # AuxK only appears once some latents are dead
    first_dead = next(i for i, d in enumerate(history.dead) if d > 0)
    assert first_dead >= 1000 // 100  # nobody can be dead before a whole window has passed


def test_wrong_data_dimension_is_a_clear_error(toy_data):
    with pytest.raises(ValueError, match=r"\(N, d_in=13\).*\(4000, 12\)"):
        train_sae(ReLUSAE(13, 20), toy_data.x, seed=0, **SETTINGS)


def test_non_finite_data_is_a_clear_error(toy_data):
    x = toy_data.x.clone()
    x[10, 3] = float("nan")
    with pytest.raises(ValueError, match="1 NaN or infinite"):
        train_sae(make("relu"), x, seed=0, **SETTINGS)


def test_data_beyond_the_sae_dtype_is_checked_after_the_cast(toy_data):
    x = toy_data.x.double()
    x[3000, 3] = 1e300  # finite in float64, inf in the SAE's float32
    with pytest.raises(ValueError, match="1 NaN or infinite values once cast from torch.float64"):
        train_sae(make("relu"), x, seed=0, **SETTINGS)


def test_non_finite_loss_stops_training_with_a_message(toy_data):
    sae = make("relu")
    with pytest.raises(FloatingPointError, match=r"step 0: the loss is (nan|inf)"):
        train_sae(sae, toy_data.x * 1e30, seed=0, **{**SETTINGS, "lr": 1e30})


@pytest.mark.parametrize("kwargs, message", [
    (dict(steps=0), "steps must be a positive integer"),
    (dict(batch_size=10**9), "larger than the data"),
    (dict(lr=0.0), r"lr must be a finite number > 0"),
    (dict(schedule="warp"), "unknown schedule"),
])
def test_bad_settings_are_clear_errors(toy_data, kwargs, message):
    with pytest.raises(ValueError, match=message):
        train_sae(make("relu"), toy_data.x, seed=0, **{**SETTINGS, **kwargs})


def test_schedules():
    wsd = [lr_factor(s, 100, "wsd", 0.1, 0.2, 0.0) for s in range(100)]
    assert wsd[0] == pytest.approx(0.1) and wsd[9] == 1.0 and wsd[79] == 1.0 and wsd[99] == pytest.approx(0.0)
    assert all(a <= b for a, b in zip(wsd[:10], wsd[1:10]))
    cos = [lr_factor(s, 100, "cosine", 0.0, 0.0, 0.1) for s in range(100)]
    assert cos[0] == pytest.approx(1.0) and cos[-1] == pytest.approx(0.1, abs=1e-3)
    assert all(a >= b for a, b in zip(cos, cos[1:]))
    assert all(lr_factor(s, 100, "constant", 0.0, 0.5, 0.0) == 1.0 for s in range(100))


def test_pre_bias_starts_at_the_data_mean(toy_data):
    sae = make("mp")
    train_sae(sae, toy_data.x + 5.0, seed=0, **{**SETTINGS, "steps": 1, "lr": 1e-12})
    torch.testing.assert_close(sae.b_dec.detach(), (toy_data.x + 5.0).mean(0), atol=1e-4, rtol=1e-4)


def test_a_custom_objective_plugs_into_the_same_loop(toy_data):
    class HalfMSE(Reconstruction):
        def __call__(self, sae, batch, dead_mask):
            x_hat, z = sae(batch)
            return {"half_mse": 0.5 * (x_hat - batch).pow(2).mean()}, z

    history = train_sae(make("mp"), toy_data.x, seed=0, objective=HalfMSE(), **SETTINGS)
    assert set(history.terms) == {"half_mse"}
    assert history.final("half_mse") < history.terms["half_mse"][0]


# ---------------------------------------------------------------- the lean optimizer step gives torch's numbers
def test_adam_gives_exactly_torch_adams_numbers():
    from sae_lib.training import Adam

    gen = torch.Generator().manual_seed(0)
    ours = [torch.randn(5, 3, generator=gen), torch.randn(7, generator=gen), torch.randn(2, 2, generator=gen)]
    theirs = [p.clone().requires_grad_() for p in ours]
    ours = [p.requires_grad_() for p in ours]
    adam, reference = Adam(ours, (0.5, 0.9375)), torch.optim.Adam(theirs, lr=1.0, betas=(0.5, 0.9375))
    for step in range(30):
        lr = 3e-2 * (1 + step) / 30
        for group in reference.param_groups:
            group["lr"] = lr
        for i, (p, q) in enumerate(zip(ours, theirs)):
            grad = torch.randn(p.shape, generator=gen)
            # the last parameter only gets a gradient from step 10 on: both must skip it and count its own steps
            p.grad, q.grad = (None, None) if i == 2 and step < 10 else (grad, grad.clone())
        adam.step(lr)
        reference.step()
        for p, q in zip(ours, theirs):
            assert torch.equal(p, q), f"step {step}: the parameters differ from torch.optim.Adam's"


def test_clip_grad_norm_gives_exactly_torchs_numbers():
    from sae_lib.training import clip_grad_norm_

    gen = torch.Generator().manual_seed(1)
    for max_norm in (0.1, 100.0):
        ours = [torch.zeros(4, 3, requires_grad=True), torch.zeros(6, requires_grad=True), torch.zeros(2, requires_grad=True)]
        theirs = [p.detach().clone().requires_grad_() for p in ours]
        for i, (p, q) in enumerate(zip(ours, theirs)):
            if i < 2:  # a parameter without a gradient is left out of the norm
                p.grad = torch.randn(p.shape, generator=gen)
                q.grad = p.grad.clone()
        clip_grad_norm_(ours, max_norm)
        torch.nn.utils.clip_grad_norm_(theirs, max_norm)
        for p, q in zip(ours, theirs):
            assert (p.grad is None and q.grad is None) or torch.equal(p.grad, q.grad)


def reference_train(sae, data, *, steps, batch_size, lr, seed, dead_window, grad_clip=1.0, betas=(0.9, 0.999)):
    """train_sae's loop written the plain way: torch.optim.Adam, LambdaLR, torch's clipping, F.normalize."""
    from sae_lib.training import lr_factor

    torch.manual_seed(seed)
    order_gen = torch.Generator().manual_seed(seed)
    Reconstruction().initialize(sae, data)
    with torch.no_grad():
        sae.W_dec.copy_(torch.nn.functional.normalize(sae.W_dec, dim=1))
    params = [p for p in sae.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr, betas=betas)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, steps, "wsd", 0.05, 0.2, 0.0))
    since_fired = torch.zeros(sae.n_latents, dtype=torch.long)
    order, cursor = torch.randperm(len(data), generator=order_gen), 0
    losses, dead = [], []
    for _ in range(steps):
        if cursor + batch_size > len(order):
            order, cursor = torch.randperm(len(data), generator=order_gen), 0
        batch = data[order[cursor : cursor + batch_size]]
        cursor += batch_size
        dead_mask = since_fired >= dead_window
        terms, z = Reconstruction()(sae, batch, dead_mask)
        loss = sum(terms.values())
        losses.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        optimizer.step()
        scheduler.step()
        with torch.no_grad():
            sae.W_dec.copy_(torch.nn.functional.normalize(sae.W_dec, dim=1))
        fired = (z.detach() != 0).any(0)
        since_fired += len(batch)
        since_fired[fired] = 0
        dead.append(int(dead_mask.sum()))
    return losses, dead


@pytest.mark.parametrize("family", ["relu", "topk", "mp"])
@pytest.mark.parametrize("grad_clip", [1.0, None])
def test_train_sae_gives_exactly_the_plain_loops_result(family, grad_clip, toy_data):
    settings = dict(steps=120, batch_size=64, lr=1e-2, seed=3, dead_window=1500, grad_clip=grad_clip)
    fast, plain = make(family), make(family)
    history = train_sae(fast, toy_data.x, progress=False, **settings)
    losses, dead = reference_train(plain, toy_data.x, **settings)
    assert history.loss == losses and history.dead == dead
    if family == "topk":
        assert max(dead) > 0 and "auxk" in history.terms  # the dead-latent path ran too
    for (name, p), q in zip(fast.state_dict().items(), plain.state_dict().values()):
        assert torch.equal(p, q), name


# ---------------------------------------------------------------- audit (issue 14): every nonsense setting is a clear error
@pytest.mark.parametrize("kwargs, error, message", [
    (dict(grad_clip=0.0), ValueError, r"grad_clip \(None for no clipping\) must be a finite number > 0, got 0.0"),
    (dict(grad_clip=-1.0), ValueError, r"grad_clip \(None for no clipping\) must be a finite number > 0"),
    (dict(grad_clip=float("inf")), ValueError, r"grad_clip \(None for no clipping\) must be a finite number > 0"),
    (dict(final_lr_frac=-1.0), ValueError, r"final_lr_frac must be a finite number in \[0, 1\]"),
    (dict(final_lr_frac=1.5), ValueError, r"final_lr_frac must be a finite number in \[0, 1\]"),
    (dict(warmup=2.0), ValueError, r"warmup \(the fraction of steps .*\) must be a finite number in \[0, 1\)"),
    (dict(warmup=-0.1), ValueError, r"warmup \(the fraction of steps .*\) must be a finite number in \[0, 1\)"),
    (dict(decay=1.5), ValueError, r"decay \(the fraction of steps .*\) must be a finite number in \[0, 1\]"),
    (dict(warmup=0.5, decay=0.6), ValueError, r"warmup \+ decay"),
    (dict(dead_window=0), ValueError, r"dead_window must be a positive integer"),
    (dict(dead_window=-5), ValueError, r"dead_window must be a positive integer"),
    (dict(betas=(1.0, 0.999)), ValueError, r"betas\[0\] must be a finite number in \[0, 1\)"),
    (dict(betas=(0.9, -0.1)), ValueError, r"betas\[1\] must be a finite number in \[0, 1\)"),
    (dict(betas=(0.9,)), ValueError, r"betas must be a pair"),
    (dict(lr="1e-3"), TypeError, r"lr must be a number \(a finite number > 0\), got '1e-3'"),
    (dict(lr=float("nan")), ValueError, r"lr must be a finite number > 0"),
    (dict(lr=-1e-3), ValueError, r"lr must be a finite number > 0"),
    (dict(seed=0.5), TypeError, r"seed must be an integer"),
])
def test_nonsense_settings_name_the_setting_and_its_range(toy_data, kwargs, error, message):
    with pytest.raises(error, match=message):
        train_sae(make("relu"), toy_data.x, **{**SETTINGS, "seed": 0, **kwargs})


def test_numpy_integer_settings_train_like_python_ints(toy_data):
    import numpy as np

    i = np.int64
    a, b = make("topk"), make("topk")
    train_sae(a, toy_data.x, **{**SETTINGS, "steps": 20, "batch_size": 64, "dead_window": 1000, "seed": 3})
    train_sae(b, toy_data.x, **{**SETTINGS, "steps": i(20), "batch_size": i(64), "dead_window": i(1000), "seed": i(3)})
    assert torch.equal(a.W_dec, b.W_dec)


def test_a_loss_that_explodes_stops_training_with_a_message(toy_data):
    class Exploding(Reconstruction):
        """A loss of 10^calls: finite for all 30 steps, but growing tenfold at each."""

        calls = 0

        def __call__(self, sae, batch, dead_mask):
            terms, z = super().__call__(sae, batch, dead_mask)
            self.calls += 1
            return {"mse": 0 * terms["mse"] + 10.0**self.calls}, z

    with pytest.raises(FloatingPointError, match=r"stopped at step 5: the loss grew from 10 to 1e\+06, over 10000 times"):
        train_sae(make("mp"), toy_data.x, seed=0, objective=Exploding(), **{**SETTINGS, "steps": 30})


def test_final_median_ignores_one_outlier_batch():
    from sae_lib.training import History

    history = History(loss=[1.0] * 49 + [1000.0])
    assert history.final(median=True) == 1.0
    assert history.final() > 20  # the mean is dominated by the one spike
    assert History(loss=[1.0, 3.0]).final(median=True) == 2.0


def test_target_l0_steers_the_l1_weight_to_the_wanted_sparsity():
    """The same rule, on data of very different scales, lands near the target L0 (the L1 weight it
    finds scales with the data, which is why no fixed weight would do)."""
    from sae_lib import ReLUSAE, superposition_data, train_sae
    from sae_lib.metrics import evaluate
    from sae_lib.training import TargetL0

    found = []
    for scale in (1.0, 30.0):
        data = superposition_data(6000, n_features=64, d=32, p_active=0.05, seed=0).x * scale
        sae = ReLUSAE(32, 128, l1_coeff=1.0, seed=0)
        rule = TargetL0(4, adapt_steps=300)
        train_sae(sae, data, steps=400, batch_size=256, lr=3e-3, objective=rule, progress=False)
        l0 = evaluate(sae, data[:2000])["l0"]
        assert 2 <= l0 <= 8, (scale, l0)
        assert rule.history[-1] == rule.history[300] == sae.l1_coeff  # held fixed after adapt_steps
        found.append(sae.l1_coeff)
    assert 10 < found[1] / found[0] < 90  # the weight follows the data's scale (30x here)


def test_target_l0_fast_steering_oscillates_and_the_damped_rule_settles():
    """Steering log λ by the integral of L0's error alone swings for the whole run (λ moves L0 only
    through the biases, a second integrator); the proportional term of DAMPED_STEERING holds L0."""
    import math

    from sae_lib import ReLUSAE, superposition_data, train_sae
    from sae_lib.training import DAMPED_STEERING, FAST_STEERING, TargetL0

    data = superposition_data(6000, n_features=64, d=32, p_active=0.05, seed=0).x
    spread = {}
    for name, rule in [("fast", FAST_STEERING), ("damped", DAMPED_STEERING)]:
        sae = ReLUSAE(32, 128, l1_coeff=1.0, seed=0)
        steer = TargetL0(4, adapt_steps=400, **rule)
        train_sae(sae, data, steps=400, batch_size=256, lr=3e-3, objective=steer, progress=False)
        assert len(steer.l0_history) == len(steer.history) == 400
        means = [sum(steer.l0_history[i:i + 20]) / 20 for i in range(100, 400, 20)]
        spread[name] = (min(means), max(means))
        # λ is exp(I + gain·e): rebuild it from the training batches' L0, step by step
        smoothed, integral = None, None
        for step, l0 in enumerate(steer.l0_history[:50]):
            smoothed = l0 if smoothed is None else steer.smoothing * smoothed + (1 - steer.smoothing) * l0
            error = min(max(math.log(max(smoothed, 1e-3) / 4), -0.7), 0.7)
            if integral is None:  # the start λ is not kept: read I from the first step's λ
                integral = math.log(steer.history[0]) - steer.gain * error
            else:
                integral += steer.rate * error
            assert steer.history[step] == pytest.approx(math.exp(integral + steer.gain * error), rel=1e-9)
    assert 3 <= spread["damped"][0] and spread["damped"][1] <= 5, spread
    assert spread["fast"][1] > 10 * max(spread["fast"][0], 0.1), spread  # far from settled


def test_target_l0_needs_an_l1_penalty():
    import pytest

    from sae_lib import TopKSAE, superposition_data, train_sae
    from sae_lib.training import TargetL0

    data = superposition_data(500, n_features=16, d=8, p_active=0.1, seed=0).x
    with pytest.raises(ValueError, match="needs a ReLUSAE"):
        train_sae(TopKSAE(8, 16, k=2), data, steps=2, batch_size=50, lr=1e-3, objective=TargetL0(2, 1))
    with pytest.raises(ValueError, match="target_l0"):
        TargetL0(0, 10)
