"""Pieces of the training loop: counting non-finite steps, and the KL's weight while it warms up."""
from pathlib import Path

import pytest

from drawkit.errors import DrawkitError
from drawkit.training import NonFiniteSteps, kl_weight

LAST_GOOD = Path("run") / "checkpoint.pt"


def flags(*finite: bool, first_step: int = 1) -> list[tuple[int, bool]]:
    return [(first_step + i, f) for i, f in enumerate(finite)]


def test_counts_the_non_finite_steps():
    counter = NonFiniteSteps(limit=10, last_good=LAST_GOOD)
    assert counter.count(flags(True, False, True, False, False)) == 3
    assert counter.count(flags(True, True)) == 0
    assert counter.count([]) == 0


def test_limit_in_a_row_stops_with_the_step_and_the_last_good_checkpoint():
    counter = NonFiniteSteps(limit=3, last_good=LAST_GOOD)
    with pytest.raises(DrawkitError, match="training diverged: 3 non-finite losses in a row at step 7") as exc:
        counter.count(flags(True, True, True, True, False, False, False, False))
    assert str(LAST_GOOD) in str(exc.value)


def test_one_fewer_than_the_limit_goes_on():
    counter = NonFiniteSteps(limit=3, last_good=LAST_GOOD)
    assert counter.count(flags(False, False)) == 2


def test_a_finite_step_starts_the_count_again():
    counter = NonFiniteSteps(limit=3, last_good=LAST_GOOD)
    assert counter.count(flags(False, False, True, False, False, True, False, False)) == 6


def test_the_count_in_a_row_carries_over_between_reads():
    """Flags arrive a few at a time (one step late on a GPU); a run of bad steps spans the reads."""
    counter = NonFiniteSteps(limit=3, last_good=LAST_GOOD)
    assert counter.count(flags(True, False, first_step=1)) == 1
    assert counter.count(flags(False, first_step=3)) == 1
    with pytest.raises(DrawkitError, match="at step 4"):
        counter.count(flags(False, True, first_step=4))


def test_a_limit_of_one_stops_at_the_first_bad_step():
    counter = NonFiniteSteps(limit=1, last_good=LAST_GOOD)
    assert counter.count(flags(True, True)) == 0
    with pytest.raises(DrawkitError, match="1 non-finite losses in a row at step 3"):
        counter.count(flags(False, first_step=3))


def test_kl_weight_rises_linearly_to_one_then_stays():
    assert [kl_weight(step, 4) for step in range(1, 7)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert kl_weight(1, 0) == 1.0                    # 0: no warm-up, the bound itself from the first step


def test_a_warming_step_follows_the_weighted_objective_and_reports_the_full_bound(registry):
    import torch

    from drawkit.model import DrawConfig, build_model
    from drawkit.training import make_optimizer, train_step

    config = DrawConfig(image_shape=(1, 8, 8), glimpses=3, hidden=16, z_dim=4, read_size=2, write_size=3)
    x = (torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    noise_seed = 5

    def gradients(weight=None):
        torch.manual_seed(0)
        model = build_model(config, registry)
        torch.manual_seed(noise_seed)
        if weight is None:                           # by hand: reconstruction + 0.25 * KL
            output = model(x)
            (output.reconstruction + 0.25 * output.kl.sum(1)).mean().backward()
        else:
            output = train_step(model, make_optimizer(model, 0.0), x, clip=1e9, kl_weight=weight).output
            assert torch.allclose(output.loss, output.reconstruction + output.kl.sum(1))  # what is logged
        return [p.grad.clone() for p in model.parameters()], output

    by_hand, _ = gradients()
    stepped, _ = gradients(0.25)
    full, _ = gradients(1.0)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(by_hand, stepped))
    assert not all(torch.allclose(a, b, atol=1e-6) for a, b in zip(full, stepped))


def test_a_step_reports_its_gradient_norm_before_clipping(registry):
    """metrics.jsonl's grad_norm: the norm clipping saw, not the clipped one, so a record shows whether --clip binds."""
    import torch

    from drawkit.model import DrawConfig, build_model
    from drawkit.training import make_optimizer, train_step

    config = DrawConfig(image_shape=(1, 8, 8), glimpses=3, hidden=16, z_dim=4, read_size=2, write_size=3)
    x = (torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0)) > 0.5).float()

    def fresh_model():
        torch.manual_seed(0)
        model = build_model(config, registry)
        torch.manual_seed(5)  # the same latent noise for both
        return model

    def gradient_norm(model):
        return torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))

    by_hand = fresh_model()
    by_hand(x).loss.mean().backward()
    norm = gradient_norm(by_hand)
    clip = float(norm) / 10
    model = fresh_model()
    step = train_step(model, make_optimizer(model, 0.0), x, clip=clip)
    torch.testing.assert_close(step.grad_norm, norm)
    assert gradient_norm(model) == pytest.approx(clip, rel=1e-4)  # what the update used
