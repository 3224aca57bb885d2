"""How close a training step comes to the machine's limit on its own matrix products.

A step's matrix products (``mm``, ``addmm``, ``bmm``, ``baddbmm``, convolutions and their
backward) are recorded as they reach the dispatcher, with their operands' shapes, layouts and
dtypes, and counted with ``torch.utils.flop_counter``'s formulas (2·m·n·k for a product).
Higher-level calls (``Linear``, ``@``, ``LSTMCell``) reach the dispatcher as these products, in
the forward and the backward alike. Each distinct product is then timed alone on the device, on
random operands of the same shapes, layout and dtype: the step's products at that speed would
take ``sum(count x time)``, and the step's FLOPs over that time is the peak the step could
reach. The achieved figure over the peak is the step's utilisation.

A compiled model (``torch.compile``) runs its products inside compiled code that dispatch modes
do not see: count on an eager copy of the same model (same config, same batch). The
mathematics, and so the products, are the same.
"""
import math
import time
from collections import Counter
from typing import Callable, NamedTuple, Optional

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

aten = torch.ops.aten
#: the matrix products counted, as aten op packets (each has a formula in flop_registry)
PRODUCT_OPS = (aten.mm, aten.addmm, aten.bmm, aten.baddbmm, aten._scaled_mm, aten.convolution,
               aten._convolution, aten.cudnn_convolution, aten.convolution_overrideable,
               aten._slow_conv2d_forward, aten.convolution_backward)
WARMUP_CALLS = 3       # untimed calls of each product before it is timed
TARGET_SECONDS = 0.02  # each product is repeated for about this long


class TensorSpec(NamedTuple):
    """An operand as a product saw it: enough to make a random one laid out the same way."""

    shape: tuple
    stride: tuple
    dtype: torch.dtype


class Product(NamedTuple):
    """One matrix product a step ran: the op's name, its operands' shapes, their dtype, its FLOPs.

    ``call`` is the op and its arguments with each tensor as a TensorSpec: what peak_gflops replays.
    """

    op: str
    shapes: tuple
    dtype: Optional[torch.dtype]
    flops: int
    call: tuple = ()


def _spec(value):
    """Tensors as TensorSpecs and lists as tuples, so a call can be compared, counted and replayed."""
    if isinstance(value, torch.Tensor):
        return TensorSpec(tuple(value.shape), tuple(value.stride()), value.dtype)
    if isinstance(value, (list, tuple)):
        return tuple(_spec(v) for v in value)
    return value


def _tensor_specs(call_args) -> list:
    found = []
    for value in call_args:
        if isinstance(value, TensorSpec):
            found.append(value)
        elif isinstance(value, tuple):
            found.extend(_tensor_specs(value))
    return found


class ProductRecorder(TorchDispatchMode):
    """Records every matrix product that reaches the dispatcher while it is active."""

    def __init__(self):
        super().__init__()
        self.products: list[Product] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func._overloadpacket in PRODUCT_OPS:
            self.products.append(self._product(func, args, kwargs, out))
        return out

    def _product(self, func, args, kwargs, out) -> Product:
        flops = flop_registry[func._overloadpacket](*args, **kwargs, out_val=out)
        call_args = _spec(args)
        operands = _tensor_specs(call_args)
        return Product(str(func), tuple(t.shape for t in operands), operands[0].dtype if operands else None,
                       int(flops), (func, call_args, _spec(tuple(kwargs.items()))))


def matmul_shapes(step_fn: Callable[[], object]) -> list[Product]:
    """The matrix products of one call of ``step_fn`` (a whole training step: forward, backward, optimizer).

    ``step_fn`` must run eagerly: products inside torch.compile'd code are not seen (count an
    eager copy of a compiled model).
    """
    with ProductRecorder() as recorder:
        step_fn()
    return recorder.products


def _random_operand(spec: TensorSpec, device: torch.device) -> torch.Tensor:
    """Random values of ``spec``'s dtype, viewed with its shape and strides (broadcast strides included)."""
    storage = 1 + sum((size - 1) * stride for size, stride in zip(spec.shape, spec.stride)) if all(spec.shape) else 0
    if spec.dtype.is_floating_point or spec.dtype.is_complex:
        base = torch.randn(storage, dtype=spec.dtype, device=device)
    else:
        base = torch.randint(0, 2, (storage,), dtype=spec.dtype, device=device)
    return base.as_strided(spec.shape, spec.stride)


def _operands(value, device: torch.device):
    if isinstance(value, TensorSpec):
        return _random_operand(value, device)
    if isinstance(value, tuple):
        return tuple(_operands(v, device) for v in value)
    return value


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _seconds_per_call(call: tuple, device: torch.device, repeats: Optional[int]) -> float:
    """One product alone: a few untimed calls, then ``repeats`` timed (None: about TARGET_SECONDS' worth)."""
    func, call_args, call_kwargs = call
    args, kwargs = _operands(call_args, device), dict(_operands(call_kwargs, device))
    with torch.no_grad():
        for _ in range(WARMUP_CALLS):
            func(*args, **kwargs)
        if repeats is None:
            repeats = max(1, math.ceil(TARGET_SECONDS / max(_timed(func, args, kwargs, 1, device), 1e-7)))
        return _timed(func, args, kwargs, repeats, device) / repeats


def _timed(func, args, kwargs, repeats: int, device: torch.device) -> float:
    _synchronize(device)
    started = time.perf_counter()
    for _ in range(repeats):
        func(*args, **kwargs)
    _synchronize(device)
    return time.perf_counter() - started


def peak_gflops(products: list[Product], device, repeats: Optional[int] = None) -> float:
    """The step's product FLOPs over the time its products take when each runs alone (GFLOPS).

    Each distinct product (op, shapes, layout, dtype) is timed once and weighted by how often the
    step runs it, so the peak is that of this step's own mix of products, in its precision.
    """
    device = torch.device(device)
    counts = Counter(product.call for product in products)
    flops_of = {product.call: product.flops for product in products}
    total_flops = sum(flops_of[call] * n for call, n in counts.items())
    seconds = sum(_seconds_per_call(call, device, repeats) * n for call, n in counts.items())
    return total_flops / seconds / 1e9


def utilisation(step_flops: float, seconds_per_step: float, peak: float) -> dict:
    """The step's product work, its achieved rate and that rate as a share of ``peak`` (GFLOPS)."""
    achieved = step_flops / seconds_per_step / 1e9
    return {"matmul_gflop_per_step": step_flops / 1e9, "achieved_gflops": achieved,
            "peak_gflops": peak, "percent_of_peak": 100 * achieved / peak}


def _figure(value: float) -> str:
    """Whole numbers from 10 up, two significant figures below (a tiny model's rates)."""
    return f"{value:.0f}" if value >= 10 else f"{value:.2g}"


def describe(figures: dict) -> str:
    """utilisation()'s dict in one line, for the bench table."""
    return (f"{_figure(figures['matmul_gflop_per_step'])} GFLOP/step, {_figure(figures['achieved_gflops'])} GFLOPS "
            f"achieved of {_figure(figures['peak_gflops'])} peak ({figures['percent_of_peak']:.0f} %)")
