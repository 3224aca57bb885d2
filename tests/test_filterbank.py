"""The filterbank against the DRAW paper's equations (section 3.2), computed here one number at a time."""
import math
import random

import pytest
import torch

from drawkit_plugins.filterbank import (FilterbankAttention, filterbank, filters, read_patch, window_from_params,
                                        write_patch)

WIDTH, HEIGHT = 28, 20  # A across, B down: non-square on purpose
SIZES = [1, 2, 3, 5, 12]


def paper_window(params, width, height, size):
    """Eqs. 21-24: (g~x, g~y, log sigma^2, log delta~, log gamma) -> gx, gy, sigma^2, delta, gamma."""
    gx_, gy_, log_sigma2, log_delta, log_gamma = params
    gx = (width + 1) / 2 * (gx_ + 1)
    gy = (height + 1) / 2 * (gy_ + 1)
    delta = (max(width, height) - 1) / (size - 1) * math.exp(log_delta) if size > 1 else 0.0
    return gx, gy, math.exp(log_sigma2), delta, math.exp(log_gamma)


def paper_filters(centre, delta, sigma2, size, length):
    """Eqs. 19-20, 25-26: F[i][a] for filters i = 1..N and pixels a = 1..length, rows normalised to sum 1."""
    rows = []
    for i in range(1, size + 1):
        mu = centre + (i - size / 2 - 0.5) * delta
        row = [math.exp(-(a - mu) ** 2 / (2 * sigma2)) for a in range(1, length + 1)]
        total = sum(row)
        rows.append([value / total for value in row])
    return torch.tensor(rows, dtype=torch.float64)


def random_params(rng, batch, device="cpu"):
    """Windows that stay mostly over the image, so every row has real mass to normalise."""
    return torch.tensor([[rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 2.0),
                          rng.uniform(-1.5, -0.7), rng.uniform(-1.0, 1.0)] for _ in range(batch)],
                        dtype=torch.float64, device=device)


def weighted_centres(f):
    """Sum_a a * F[i, a] for each row: where each filter is centred, in 1-based pixel coordinates."""
    a = torch.arange(1, f.shape[-1] + 1, dtype=f.dtype)
    return (f * a).sum(-1)


@pytest.mark.parametrize("size", SIZES)
def test_window_follows_equations_21_to_24(size):
    params = random_params(random.Random(size), batch=4)
    window = window_from_params(params, WIDTH, HEIGHT, size)
    assert window.size == size
    for b in range(len(params)):
        gx, gy, sigma2, delta, gamma = paper_window(params[b].tolist(), WIDTH, HEIGHT, size)
        assert window.gx[b].item() == pytest.approx(gx, rel=1e-12)
        assert window.gy[b].item() == pytest.approx(gy, rel=1e-12)
        assert window.sigma2[b].item() == pytest.approx(sigma2, rel=1e-12)
        assert window.gamma[b].item() == pytest.approx(gamma, rel=1e-12)
        if size > 1:
            assert window.delta[b].item() == pytest.approx(delta, rel=1e-12)


@pytest.mark.parametrize("size", SIZES)
def test_filterbank_matches_explicit_loop(size, test_device):
    params = random_params(random.Random(100 + size), batch=3, device=test_device)
    fx, fy = (f.cpu() for f in filterbank(window_from_params(params, WIDTH, HEIGHT, size), WIDTH, HEIGHT))
    assert fx.shape == (3, size, WIDTH) and fy.shape == (3, size, HEIGHT)
    for b in range(3):
        gx, gy, sigma2, delta, _ = paper_window(params[b].tolist(), WIDTH, HEIGHT, size)
        torch.testing.assert_close(fx[b], paper_filters(gx, delta, sigma2, size, WIDTH), rtol=1e-6, atol=1e-12)
        torch.testing.assert_close(fy[b], paper_filters(gy, delta, sigma2, size, HEIGHT), rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("size", SIZES)
def test_rows_sum_to_one(size, test_device):
    params = random_params(random.Random(200 + size), batch=5, device=test_device)
    for f in filterbank(window_from_params(params, WIDTH, HEIGHT, size), WIDTH, HEIGHT):
        torch.testing.assert_close(f.sum(-1), torch.ones(5, size, dtype=torch.float64, device=test_device),
                                   rtol=0, atol=1e-7)


def test_zero_centre_lands_on_the_middle_of_the_image():
    """g~ = 0 is (A+1)/2 across and (B+1)/2 down in pixels numbered 1..A, 1..B: 14.5 and 10.5 here."""
    params = torch.tensor([[0.0, 0.0, math.log(2.0), math.log(0.2), 0.0]], dtype=torch.float64)
    window = window_from_params(params, WIDTH, HEIGHT, 3)
    assert window.gx.item() == pytest.approx(14.5) and window.gy.item() == pytest.approx(10.5)
    fx, fy = filterbank(window, WIDTH, HEIGHT)
    assert weighted_centres(fx)[0, 1].item() == pytest.approx(14.5, abs=1e-6)   # the middle of three filters
    assert weighted_centres(fy)[0, 1].item() == pytest.approx(10.5, abs=1e-6)
    torch.testing.assert_close(fx[0, 1], fx[0, 1].flip(0))                       # symmetric about the middle


@pytest.mark.parametrize("size", [2, 4, 5])
def test_filter_centres_are_delta_apart_around_g(size):
    """Broad filters well inside a 60 x 40 image: each row's centre of mass is its mu_i (Poisson summation)."""
    width, height, delta = 60, 40, 3.0
    log_delta = math.log(delta * (size - 1) / (max(width, height) - 1))
    params = torch.tensor([[0.1, -0.05, math.log(2.25), log_delta, 0.0]], dtype=torch.float64)
    window = window_from_params(params, width, height, size)
    fx, fy = filterbank(window, width, height)
    gx, gy = (width + 1) / 2 * 1.1, (height + 1) / 2 * 0.95
    offsets = torch.tensor([i - (size + 1) / 2 for i in range(1, size + 1)], dtype=torch.float64)
    torch.testing.assert_close(weighted_centres(fx)[0], gx + offsets * delta, rtol=0, atol=1e-6)
    torch.testing.assert_close(weighted_centres(fy)[0], gy + offsets * delta, rtol=0, atol=1e-6)
    torch.testing.assert_close(weighted_centres(fx)[0].diff(), torch.full((size - 1,), delta, dtype=torch.float64))


def test_one_filter_sits_on_g_and_stays_finite():
    params = torch.tensor([[0.3, -0.4, math.log(1.5), 5.0, 0.0],
                           [0.0, 0.0, math.log(1.5), -5.0, 0.0]], dtype=torch.float64)
    window = window_from_params(params, WIDTH, HEIGHT, 1)
    assert torch.isfinite(window.delta).all()
    fx, fy = filterbank(window, WIDTH, HEIGHT)
    assert torch.isfinite(fx).all() and torch.isfinite(fy).all()
    torch.testing.assert_close(fx[0, 0], paper_filters(window.gx[0].item(), 0.0, 1.5, 1, WIDTH)[0])
    torch.testing.assert_close(weighted_centres(fx)[1], torch.tensor([14.5], dtype=torch.float64), atol=1e-6, rtol=0)
    torch.testing.assert_close(weighted_centres(fy)[1], torch.tensor([10.5], dtype=torch.float64), atol=1e-6, rtol=0)


def test_filters_with_window_far_off_the_image_stay_finite():
    centre = torch.tensor([-500.0], dtype=torch.float64)
    f = filters(centre, torch.tensor([1.0], dtype=torch.float64), torch.tensor([0.01], dtype=torch.float64), 3, WIDTH)
    assert torch.isfinite(f).all()


def filters_and_gamma(seed, batch, size, device="cpu"):
    params = random_params(random.Random(seed), batch, device)
    window = window_from_params(params, WIDTH, HEIGHT, size)
    fx, fy = filterbank(window, WIDTH, HEIGHT)
    return fx, fy, window.gamma


@pytest.mark.parametrize("size", [1, 3, 5])
def test_read_is_gamma_fy_x_fx_transposed_for_every_channel(size, test_device):
    fx, fy, gamma = filters_and_gamma(300 + size, batch=2, size=size, device=test_device)
    x = torch.rand(2, 3, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(size),
                   dtype=torch.float64).to(test_device)
    glimpse = read_patch(x, fx, fy, gamma)
    assert glimpse.shape == (2, 3, size, size)
    for b in range(2):
        for c in range(3):
            torch.testing.assert_close(glimpse[b, c], gamma[b] * fy[b] @ x[b, c] @ fx[b].T)


@pytest.mark.parametrize("size", [1, 3, 5])
def test_write_is_fy_transposed_w_fx_over_gamma(size, test_device):
    fx, fy, gamma = filters_and_gamma(400 + size, batch=2, size=size, device=test_device)
    w = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(size),
                    dtype=torch.float64).to(test_device)
    canvas = write_patch(w, fx, fy, gamma)
    assert canvas.shape == (2, 3, HEIGHT, WIDTH)
    for b in range(2):
        for c in range(3):
            torch.testing.assert_close(canvas[b, c], fy[b].T @ w[b, c] @ fx[b] / gamma[b])


@pytest.mark.parametrize("size", [2, 5, 12])
def test_read_and_write_with_shared_filters_are_adjoint(size, test_device):
    """<read(x), w> = gamma^2 <x, write(w)>: write is read's transpose, up to gamma on each side."""
    fx, fy, gamma = filters_and_gamma(500 + size, batch=4, size=size, device=test_device)
    g = torch.Generator().manual_seed(size)
    x = torch.randn(4, 2, HEIGHT, WIDTH, generator=g, dtype=torch.float64).to(test_device)
    w = torch.randn(4, 2, size, size, generator=g, dtype=torch.float64).to(test_device)
    left = (read_patch(x, fx, fy, gamma) * w).sum((1, 2, 3))
    right = gamma ** 2 * (x * write_patch(w, fx, fy, gamma)).sum((1, 2, 3))
    torch.testing.assert_close(left, right)


def test_read_of_many_channels_uses_the_same_filters_on_each():
    fx, fy, gamma = filters_and_gamma(600, batch=2, size=4)
    x = torch.rand(2, 3, HEIGHT, WIDTH, dtype=torch.float64)
    together = read_patch(x, fx, fy, gamma)
    for c in range(3):
        torch.testing.assert_close(together[:, c:c + 1], read_patch(x[:, c:c + 1], fx, fy, gamma))


@pytest.fixture
def attention(test_device):
    torch.manual_seed(0)
    return FilterbankAttention((2, HEIGHT, WIDTH), hidden_size=16, read_size=3, write_size=4).double().to(test_device)


def test_attention_read_stacks_x_and_error_image_through_the_read_window(attention, test_device):
    h = torch.randn(5, 16, dtype=torch.float64, device=test_device)
    x = torch.rand(5, 2, HEIGHT, WIDTH, dtype=torch.float64, device=test_device)
    x_hat = torch.randn(5, 2, HEIGHT, WIDTH, dtype=torch.float64, device=test_device)
    glimpse = attention.read(x, x_hat, h)
    assert glimpse.shape == (5, 4, 3, 3) == (5, *attention.glimpse_shape)
    window = window_from_params(attention.read_params(h), WIDTH, HEIGHT, 3)
    fx, fy = filterbank(window, WIDTH, HEIGHT)
    torch.testing.assert_close(glimpse[:, :2], read_patch(x, fx, fy, window.gamma))
    torch.testing.assert_close(glimpse[:, 2:], read_patch(x_hat, fx, fy, window.gamma))


def test_attention_write_paints_its_content_through_the_write_window(attention, test_device):
    h = torch.randn(5, 16, dtype=torch.float64, device=test_device)
    window = window_from_params(attention.write_params(h), WIDTH, HEIGHT, 4)
    fx, fy = filterbank(window, WIDTH, HEIGHT)
    patch = attention.write_content(h).view(5, 2, 4, 4)
    torch.testing.assert_close(attention.write(h), write_patch(patch, fx, fy, window.gamma))


def test_read_and_write_have_their_own_window_maps(attention, test_device):
    h = torch.randn(3, 16, dtype=torch.float64, device=test_device)
    x = torch.rand(3, 2, HEIGHT, WIDTH, dtype=torch.float64, device=test_device)
    read_before, write_before = attention.read(x, x, h), attention.write(h)
    with torch.no_grad():
        attention.write_params.weight.add_(0.5)
    torch.testing.assert_close(attention.read(x, x, h), read_before)
    assert not torch.allclose(attention.write(h), write_before)
    write_before = attention.write(h)
    with torch.no_grad():
        attention.read_params.weight.add_(0.5)
    assert not torch.allclose(attention.read(x, x, h), read_before)
    torch.testing.assert_close(attention.write(h), write_before)


@pytest.mark.parametrize("size", [2, 5])
def test_windows_start_over_the_whole_image_blurred_or_sharp(size):
    """h = 0 gives the starting window: centred, the whole-image stride, gamma 1; sigma = stride / 2 by
    default, and nn.Linear's near-zero bias (sigma about 1 pixel) with start=sharp."""
    h = torch.zeros(1, 400)  # 400 units: nn.Linear's bias within +-0.05
    stride = (WIDTH - 1) / (size - 1)
    for start, sigma in (("blurred", stride / 2), ("sharp", 1.0)):
        attention = FilterbankAttention((1, HEIGHT, WIDTH), hidden_size=400, read_size=size, write_size=size,
                                        start=start)
        for which in ("read", "write"):
            w = attention.window(h, which)
            assert w.sigma2.sqrt().item() == pytest.approx(sigma, rel=0.05 if start == "sharp" else 1e-6)
            assert w.delta.item() == pytest.approx(stride, rel=0.06)
            assert w.gx.item() == pytest.approx((WIDTH + 1) / 2, rel=0.06)
