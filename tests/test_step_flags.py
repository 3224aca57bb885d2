"""Step flags are read late on a GPU, so the host never waits for the step it has just queued."""
import torch

from drawkit.step_flags import StepFlags


def flags_of(values, lag):
    flags = StepFlags(torch.device("cpu"), lag=lag)
    seen = []
    for step, value in enumerate(values, start=1):
        flags.push(step, torch.tensor(value))
        seen.append(list(flags.read()))
    return flags, seen


def test_one_step_late_each_flag_is_read_after_the_next_step_is_queued():
    flags, seen = flags_of([True, False, True], lag=1)
    assert seen == [[], [(1, True)], [(2, False)]]
    assert list(flags.read(everything=True)) == [(3, True)]
    assert list(flags.read(everything=True)) == []


def test_without_lag_flags_are_read_at_once():
    _, seen = flags_of([False, True], lag=0)
    assert seen == [[(1, False)], [(2, True)]]


def test_the_lag_follows_the_device():
    assert StepFlags(torch.device("cpu")).lag == 0
    assert StepFlags(torch.device("cuda")).lag == 1


def test_training_adam_is_fused_on_the_cpu(registry):
    from drawkit.model import DrawConfig, build_model
    from drawkit.train import make_optimizer

    model = build_model(DrawConfig(image_shape=(1, 8, 8), glimpses=2, hidden=8, z_dim=2), registry)
    assert all(group["fused"] for group in make_optimizer(model, 1e-3).param_groups)
