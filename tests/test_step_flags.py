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
    from drawkit.training import make_optimizer

    model = build_model(DrawConfig(image_shape=(1, 8, 8), glimpses=2, hidden=8, z_dim=2), registry)
    assert all(group["fused"] for group in make_optimizer(model, 1e-3).param_groups)


def test_a_flag_on_another_gpu_is_waited_for_on_that_gpus_stream(monkeypatch):
    """With --device cuda:1 the current device can be cuda:0: the event must follow the copy on cuda:1's stream."""
    from types import SimpleNamespace

    import drawkit.step_flags as step_flags

    flag_device = torch.device("cuda", 1)
    asked, events = [], []

    class Host:
        def __init__(self, value):
            self.value = value

        def copy_(self, source, non_blocking=False):
            self.value = source.value

        def item(self):
            return self.value

    class Event:
        def __init__(self):
            self.stream = None
            events.append(self)

        def record(self, stream=None):
            self.stream = stream

        def synchronize(self):
            assert self.stream is not None

    def current_stream(device=None):
        asked.append(device)
        return SimpleNamespace(device=torch.device(device) if device is not None else torch.device("cuda", 0))

    fake_torch = SimpleNamespace(empty=lambda *a, **k: Host(None), bool=torch.bool,
                                 cuda=SimpleNamespace(Event=Event, current_stream=current_stream))
    monkeypatch.setattr(step_flags, "torch", fake_torch)
    flags = step_flags.StepFlags(flag_device)
    flags.push(1, SimpleNamespace(device=flag_device, dtype=torch.bool, value=False))
    assert [event.stream.device for event in events] == [flag_device]
    assert list(flags.read(everything=True)) == [(1, False)]
