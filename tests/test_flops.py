"""The matrix-product counter and the utilisation figure of `drawkit bench` (drawkit/flops.py)."""
import json
import math

import pytest
import torch
import torch.nn as nn

from drawkit.cli import app
from drawkit.flops import matmul_shapes, peak_gflops, utilisation
from drawkit.model import DrawConfig, build_model
from drawkit.registry import get_registry

UTILISATION_KEYS = ("matmul_gflop_per_step", "achieved_gflops", "peak_gflops", "percent_of_peak")
TINY_BENCH = ["bench", "--no-compile", "--steps", "2", "--warmup", "1", "--glimpses", "2", "--hidden", "16",
              "--batch-size", "4", "--image-size", "12"]


def total_flops(products) -> int:
    return sum(product.flops for product in products)


def test_mm_and_bmm_count_two_m_n_k():
    m, k, n, b = 3, 5, 7, 4
    products = matmul_shapes(lambda: torch.mm(torch.randn(m, k), torch.randn(k, n)))
    assert [(p.op, p.shapes, p.flops) for p in products] == [("aten.mm.default", ((m, k), (k, n)), 2 * m * n * k)]
    products = matmul_shapes(lambda: torch.bmm(torch.randn(b, m, k), torch.randn(b, k, n)))
    assert len(products) == 1 and products[0].flops == 2 * b * m * n * k


def test_linear_backward_adds_two_products_of_the_same_size():
    """Forward x Wᵀ, then the input's gradient and the weight's gradient: three products of 2·m·n·k."""
    m, k, n = 3, 5, 7
    layer, x = nn.Linear(k, n), torch.randn(m, k, requires_grad=True)
    forward = matmul_shapes(lambda: layer(x))
    assert [p.flops for p in forward] == [2 * m * n * k]
    step = matmul_shapes(lambda: layer(x).sum().backward())
    assert [p.flops for p in step] == [2 * m * n * k] * 3


def test_convolution_counts_every_output_against_its_window():
    batch, c_in, c_out, side, kernel = 2, 3, 4, 5, 3
    conv = nn.Conv2d(c_in, c_out, kernel, padding=1)
    products = matmul_shapes(lambda: conv(torch.randn(batch, c_in, side, side)))
    assert total_flops(products) == 2 * batch * side * side * c_out * c_in * kernel * kernel


def test_products_under_bf16_autocast_are_recorded_in_bfloat16():
    layer = nn.Linear(8, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        products = matmul_shapes(lambda: layer(torch.randn(2, 8)))
    assert [p.dtype for p in products] == [torch.bfloat16]


def draw_forward_flops(config: DrawConfig, batch: int) -> int:
    """DRAW's forward matrix products, by hand from the config (filterbank attention, LSTM encoder)."""
    C, H, W = config.image_shape
    h, z, r, w, B = config.hidden, config.z_dim, config.read_size, config.write_size, batch
    per_step = (
        2 * B * h * 5                                   # read window parameters from h_dec
        + 2 * B * (2 * C) * r * H * W                   # Fy · [x, x_hat]
        + 2 * B * (2 * C) * r * W * r                   # (Fy · x) · Fxᵀ
        + 2 * B * 4 * h * (2 * C * r * r + h + h)       # encoder LSTMCell over [patch, h_dec], and its own h
        + 2 * B * h * 2 * z                             # posterior: mu and log sigma^2
        + 2 * B * 4 * h * (z + h)                       # decoder LSTMCell over z, and its own h
        + 2 * B * h * 5                                 # write window parameters
        + 2 * B * h * C * w * w                         # write content
        + 2 * B * C * H * w * w                         # Fyᵀ · content
        + 2 * B * C * H * w * W                         # (Fyᵀ · content) · Fx
    )
    return config.glimpses * per_step


def test_draw_forward_count_equals_the_count_by_hand():
    config = DrawConfig(image_shape=(2, 12, 10), glimpses=3, hidden=16, z_dim=4, read_size=2, write_size=3)
    model = build_model(config, get_registry())
    x = (torch.rand(5, *config.image_shape) > 0.5).float()
    assert total_flops(matmul_shapes(lambda: model(x))) == draw_forward_flops(config, batch=5)


def test_peak_replays_products_of_any_layout_and_gives_a_positive_rate():
    """A transposed operand and a broadcast one (stride 0) are timed as the step laid them out."""
    a, b = torch.randn(6, 4), torch.randn(6, 5)
    shared = torch.randn(1, 5, 3).expand(4, 5, 3)
    products = matmul_shapes(lambda: (a.t() @ b, torch.bmm(torch.randn(4, 2, 5), shared)))
    assert [spec.stride for spec in products[0].call[1]] == [(1, 4), (5, 1)]
    assert products[1].call[1][1].stride == (0, 3, 1)
    peak = peak_gflops(products, "cpu", repeats=3)
    assert peak > 0 and math.isfinite(peak)


def test_utilisation_is_achieved_over_peak():
    figures = utilisation(step_flops=3e9, seconds_per_step=0.5, peak=24.0)
    assert figures == pytest.approx({"matmul_gflop_per_step": 3.0, "achieved_gflops": 6.0, "peak_gflops": 24.0,
                                     "percent_of_peak": 25.0})


def test_bench_reports_how_near_the_step_comes_to_its_peak(cli_runner):
    result = cli_runner.invoke(app, [*TINY_BENCH, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert all(report[key] > 0 and math.isfinite(report[key]) for key in UTILISATION_KEYS)
    assert report["achieved_gflops"] == pytest.approx(report["matmul_gflop_per_step"] / report["s_per_step"])
    assert report["percent_of_peak"] == pytest.approx(100 * report["achieved_gflops"] / report["peak_gflops"])


def test_bench_table_has_a_matrix_products_row_and_no_utilisation_leaves_it_out(cli_runner):
    table = cli_runner.invoke(app, TINY_BENCH)
    assert table.exit_code == 0, table.output
    assert "matrix products" in table.stdout and "GFLOP/step" in table.stdout
    skipped = cli_runner.invoke(app, [*TINY_BENCH, "--json", "--no-utilisation"])
    assert skipped.exit_code == 0, skipped.output
    assert not set(UTILISATION_KEYS) & set(json.loads(skipped.stdout))
