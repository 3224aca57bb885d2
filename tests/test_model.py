"""DRAW assembled from plugins: shapes, determinism, the order of reads and writes, and that it learns."""
import math

import pytest
import torch

from drawkit.model import DrawConfig, build_model
from bound_reference import record_passes

T = 4


def tiny_config(**changes) -> DrawConfig:
    settings = dict(image_shape=(1, 12, 10), glimpses=T, hidden=16, z_dim=4, read_size=2, write_size=3)
    return DrawConfig(**{**settings, **changes})


def make_model(registry, seed: int = 0, device="cpu", **changes):
    torch.manual_seed(seed)
    return build_model(tiny_config(**changes), registry).to(device)


@pytest.mark.parametrize("attention", ["filterbank", "none"])
@pytest.mark.parametrize("image_shape", [(1, 12, 10), (3, 8, 14)])
def test_forward_shapes(registry, attention, image_shape, test_device):
    model = make_model(registry, attention=attention, image_shape=image_shape, device=test_device)
    x = torch.rand(5, *image_shape, device=test_device).round()
    out = model(x)
    assert out.reconstruction.shape == (5,)
    assert out.kl.shape == (5, T)
    assert out.canvas.shape == (5, *image_shape)
    assert out.loss.shape == (5,)


@pytest.mark.parametrize("attention", ["filterbank", "none"])
def test_forward_terms_are_the_bernoulli_nll_of_the_canvas_and_each_glimpses_gaussian_kl(registry, attention,
                                                                                         test_device):
    """Recomputed from the canvas and the posterior's (mu, log sigma^2) the pass produced (tests/bound_reference.py:
    log-sigmoids for -log D(x | c_T), torch.distributions for each glimpse's KL)."""
    model = make_model(registry, attention=attention, device=test_device)
    x = torch.rand(5, 1, 12, 10, device=test_device).round()
    with record_passes() as passes:
        out = model(x)
    (recorded,) = passes
    assert len(recorded.posteriors) == T
    torch.testing.assert_close(recorded.canvas, out.canvas.double(), rtol=0, atol=0)
    torch.testing.assert_close(out.reconstruction.double(), recorded.reconstruction(), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(out.kl.double(), recorded.kl(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.loss.double(), recorded.bound(), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("attention", ["filterbank", "none"])
def test_given_noise_makes_forward_deterministic(registry, attention, test_device):
    model = make_model(registry, attention=attention, device=test_device)
    x = torch.rand(3, 1, 12, 10, device=test_device).round()
    noise = torch.randn(T, 3, 4, device=test_device)
    first, second = model(x, noise=noise), model(x, noise=noise)
    torch.testing.assert_close(first.canvas, second.canvas, rtol=0, atol=0)
    torch.testing.assert_close(first.loss, second.loss, rtol=0, atol=0)
    assert not torch.allclose(model(x, noise=torch.randn(T, 3, 4, device=test_device)).canvas, first.canvas)


def test_without_noise_forward_samples_afresh(registry):
    model = make_model(registry)
    x = torch.rand(3, 1, 12, 10).round()
    assert not torch.allclose(model(x).canvas, model(x).canvas)


@pytest.mark.parametrize("attention", ["filterbank", "none"])
def test_generate_gives_images_in_unit_interval(registry, attention, test_device):
    model = make_model(registry, attention=attention, image_shape=(3, 8, 14), device=test_device)
    images = model.generate(7)
    assert images.shape == (7, 3, 8, 14) and images.device.type == test_device.type
    assert images.min() >= 0 and images.max() <= 1
    assert not torch.allclose(images[0], images[1])


def test_generate_draws_a_fresh_z_at_every_glimpse(registry):
    model = make_model(registry)
    drawn = []
    model.decoder.register_forward_pre_hook(lambda module, args: drawn.append(args[0].clone()))
    model.generate(4000)
    assert len(drawn) == T
    for t in range(1, T):
        assert not torch.allclose(drawn[t], drawn[0])
    z = torch.stack(drawn).double()
    n = z.numel()                                          # T x 4,000 x z_dim = 64,000 draws
    assert abs(z.mean().item()) < 5 / math.sqrt(n)         # five standard errors of the mean, 1 / sqrt(n)
    assert abs(z.std().item() - 1) < 5 / math.sqrt(2 * n)  # ... and of the standard deviation, about 1 / sqrt(2n)


def test_observe_is_called_once_per_glimpse(registry):
    model = make_model(registry)
    seen = []
    observe = lambda t, h_prev, h, canvas: seen.append((t, h_prev.shape, h.shape, canvas.shape))  # noqa: E731
    model(torch.rand(2, 1, 12, 10).round(), observe=observe)
    assert seen == [(t, (2, 16), (2, 16), (2, 1, 12, 10)) for t in range(T)]
    seen.clear()
    model.generate(3, observe=observe)
    assert [s[0] for s in seen] == list(range(T))


def test_observed_canvas_ends_as_the_output_canvas(registry):
    model = make_model(registry)
    canvases = []
    x = torch.rand(2, 1, 12, 10).round()
    noise = torch.randn(T, 2, 4)
    out = model(x, noise=noise, observe=lambda t, h_prev, h, canvas: canvases.append(canvas.clone()))
    torch.testing.assert_close(canvases[-1], out.canvas)


def test_read_uses_the_previous_decoder_state_and_write_the_current_one(registry):
    model = make_model(registry)
    attention = model.attention
    read_states, write_states, observed = [], [], []

    def read(x, x_hat, h_dec):
        read_states.append(h_dec.clone())
        return type(attention).read(attention, x, x_hat, h_dec)

    def write(h_dec):
        write_states.append(h_dec.clone())
        return type(attention).write(attention, h_dec)

    attention.read, attention.write = read, write
    model(torch.rand(2, 1, 12, 10).round(), observe=lambda t, h_prev, h, c: observed.append((h_prev, h)))
    assert torch.equal(read_states[0], torch.zeros(2, 16))
    for t, (h_prev, h) in enumerate(observed):
        torch.testing.assert_close(read_states[t], h_prev, rtol=0, atol=0)
        torch.testing.assert_close(write_states[t], h, rtol=0, atol=0)
        if t > 0:
            torch.testing.assert_close(read_states[t], write_states[t - 1], rtol=0, atol=0)


def test_error_image_fed_to_read_is_x_minus_sigmoid_of_canvas(registry):
    model = make_model(registry)
    attention = model.attention
    pairs, canvases = [], []

    def read(x, x_hat, h_dec):
        pairs.append((x.clone(), x_hat.clone()))
        return type(attention).read(attention, x, x_hat, h_dec)

    attention.read = read
    x = torch.rand(2, 1, 12, 10).round()
    model(x, observe=lambda t, h_prev, h, canvas: canvases.append(canvas.clone()))
    torch.testing.assert_close(pairs[0][1], x - 0.5)                              # c_0 = 0
    for t in range(1, T):
        torch.testing.assert_close(pairs[t][1], x - torch.sigmoid(canvases[t - 1]))


def test_loss_falls_on_a_small_mnist_subset(registry, mnist_train_file, test_device):
    torch.manual_seed(0)
    images = torch.from_numpy(mnist_train_file(512).copy()).unsqueeze(1)
    x = (images.float() / 255 > 0.5).float().to(test_device)
    model = build_model(DrawConfig(glimpses=4, hidden=32, z_dim=8, read_size=2, write_size=5), registry).to(test_device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    order = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(100):
        loss = model(x[torch.randint(0, len(x), (64,), generator=order).to(test_device)]).loss.mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < first - 150, (first, last)


def test_a_learned_canvas_starts_every_image_at_c0_and_start_sets_it_to_the_mean_image(registry):
    model = make_model(registry, canvas_start="learned")
    assert model.canvas_0.shape == (1, 12, 10) and model.canvas_0.requires_grad
    images = torch.rand(50, 1, 12, 10)
    model.start_canvas_at(images)
    assert torch.allclose(torch.sigmoid(model.canvas_0), images.mean(0).clamp(1e-3, 1 - 1e-3), atol=1e-6)
    canvas, _ = model._blank(3, images)
    assert torch.equal(canvas, model.canvas_0.expand(3, -1, -1, -1))
    zero = make_model(registry)
    assert not hasattr(zero, "canvas_0") and not zero._blank(3, images)[0].any()
    output = model(images[:4])
    output.loss.mean().backward()
    assert model.canvas_0.grad is not None and model.canvas_0.grad.abs().sum() > 0  # it learns


def test_generation_starts_from_the_learned_canvas(registry):
    model = make_model(registry, canvas_start="learned", attention="none")
    with torch.no_grad():
        model.canvas_0.fill_(3.0)
        model.attention.write_content.weight.zero_()
        model.attention.write_content.bias.zero_()
    assert torch.allclose(model.generate(2), torch.sigmoid(torch.tensor(3.0)).expand(2, 1, 12, 10))
