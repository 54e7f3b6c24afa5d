"""Inference latency, measured so that the numbers can be trusted on a busy machine.

Absolute times drift by tens of percent within an hour on a shared CPU, so the number that matters is the
ratio to the unpruned model, timed in alternation in the same run (`LatencyMeter.compare`). Each model is
prepared once (exported / compiled / moved) and the prepared runner is reused while the model's parameter
shapes are unchanged, so timing a candidate costs little more than its forward passes.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import importlib
import io
import time
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from autocompress.config import AutocompressError, LatencyConfig, validate

ONNX_HINT = 'pip install "autocompress[onnx]"'
_CACHE_SIZE = 4  # baseline + current candidate (+ slack): the env's access pattern


class LatencyError(AutocompressError):
    """Latency cannot be measured as asked (bad input shape, missing runtime, no GPU, export failure)."""


@dataclass(frozen=True)
class LatencyStats:
    """Distribution of per-call latency of one model (one call = one batch of `batch_size` images)."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    cv: float
    """Coefficient of variation (std / mean) of the timed calls: ~0.03 is quiet, > 0.1 is noisy."""
    n: int


@dataclass(frozen=True)
class LatencyComparison:
    """A candidate timed against a baseline in alternation."""

    latency_ms: float
    """Median candidate latency per call."""
    baseline_ms: float
    """Median baseline latency per call."""
    speedup: float
    """Median of the per-pair ratios baseline / candidate (> 1: the candidate is faster)."""
    spread: float
    """Relative inter-quartile range of the per-pair ratios (IQR / median): the speedup's noise."""
    n: int
    """Number of (baseline, candidate) pairs."""


Runner = Callable[[], Any]


@dataclass
class _Prepared:
    ref: weakref.ReferenceType[nn.Module]
    signature: tuple[tuple[int, ...], ...]
    runner: Runner
    module: nn.Module | None
    """The module run by `runner` when it is a torch module (for eval mode); None for ONNX Runtime."""


def _signature(model: nn.Module) -> tuple[tuple[int, ...], ...]:
    return tuple(tuple(p.shape) for p in model.parameters())


def _percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def _stats(times_ms: Sequence[float]) -> LatencyStats:
    arr = np.asarray(times_ms, dtype=np.float64)
    mean = float(arr.mean())
    cv = float(arr.std() / mean) if mean > 0 else 0.0
    return LatencyStats(
        median_ms=float(np.median(arr)),
        p10_ms=_percentile(arr, 10),
        p90_ms=_percentile(arr, 90),
        cv=cv,
        n=len(arr),
    )


def check_input_shape(input_shape: Sequence[int]) -> tuple[int, ...]:
    """Validate one input's shape: (C, H, W) for an image, (features,) for a vector such as a policy's
    observation (or any shape of one to three positive sizes)."""
    shape = tuple(input_shape)
    if not 1 <= len(shape) <= 3 or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
        raise LatencyError(
            "input_shape must be one to three positive integers, (C, H, W) for images, e.g. (3, 32, 32), or "
            f"(features,) for vectors; got {input_shape!r}."
        )
    return shape


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with `torch.set_num_threads(n)`, restoring the previous setting afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextlib.contextmanager
def _eval_mode(modules: Sequence[nn.Module]) -> Iterator[None]:
    """Put modules in eval mode for the block and restore each submodule's training flag afterwards."""
    saved = [[(m, m.training) for m in mod.modules()] for mod in modules]
    for mod in modules:
        mod.eval()
    try:
        yield
    finally:
        for flags in saved:
            for m, training in flags:
                m.training = training


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """A garbage collection inside a timed call would be charged to that call."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _import_onnxruntime() -> Any:
    try:
        return importlib.import_module("onnxruntime")
    except ImportError:
        raise LatencyError(f"runtime 'onnxruntime' needs ONNX Runtime: {ONNX_HINT}") from None


@contextlib.contextmanager
def mha_fastpath_off() -> Iterator[None]:
    """nn.MultiheadAttention's fused inference kernel has no ONNX export; export (and trace) its plain ops."""
    enabled = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(enabled)


def export_onnx_bytes(model: nn.Module, example: torch.Tensor, dynamic_batch: bool = False) -> bytes:
    """Export `model` (in eval mode) to ONNX in memory with the TorchScript exporter (~0.2 s vs 3-4 s for dynamo).

    `dynamic_batch` leaves the batch dimension free (for evaluation in batches of any size).
    """
    axes = {"input": {0: "batch"}, "output": {0: "batch"}} if dynamic_batch else None
    buf = io.BytesIO()
    try:
        importlib.import_module("onnx")
    except ImportError:
        raise LatencyError(f"ONNX export needs the onnx package: {ONNX_HINT}") from None
    try:
        with warnings.catch_warnings(), _eval_mode([model]), torch.no_grad(), mha_fastpath_off():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model, (example,), buf, dynamo=False, input_names=["input"], output_names=["output"],
                dynamic_axes=axes,
            )
    except Exception as exc:  # the exporter raises many unrelated types
        raise LatencyError(
            f"could not export {type(model).__name__} to ONNX ({type(exc).__name__}: {str(exc)[:300]}); "
            "time it with runtime 'torch' instead."
        ) from None
    return buf.getvalue()


class LatencyMeter:
    """Times models with one runtime, device and thread count, on a fixed random input.

    Runtimes:
    - ``torch``: eager PyTorch under ``torch.inference_mode()`` with the model in eval mode.
    - ``onnxruntime``: the model exported to ONNX (TorchScript exporter, in memory) and run by an
      InferenceSession with ``intra_op_num_threads=cfg.threads``, one inter-op thread, sequential execution.
    - ``compile``: ``torch.compile`` (inductor). Compiling costs seconds (6-21 s measured here) for every new
      model or shape, paid in the first (warm-up) call: use it for deployment figures, not inside a search.

    On ``device="cuda"`` calls are timed with CUDA events and a synchronize; models not already on the GPU
    are copied there (the caller's model is never moved). The caller's models are otherwise left as they
    were: training flags and the torch thread count are restored after each measurement.
    """

    def __init__(self, cfg: LatencyConfig, input_shape: Sequence[int]) -> None:
        validate(cfg, "latency")
        if cfg.runtime not in RUNTIMES:
            raise LatencyError(f"unknown runtime {cfg.runtime!r}; choose one of {', '.join(RUNTIMES)}.")
        self.runtime = RUNTIMES[cfg.runtime]
        self.cfg = cfg
        self.input_shape = check_input_shape(input_shape)
        self.device = torch.device(cfg.device)
        if self.device.type not in ("cpu", "cuda"):
            raise LatencyError(f"device {cfg.device!r} is not supported; use 'cpu' or 'cuda'.")
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise LatencyError("device 'cuda' was requested but no CUDA GPU is available; use device 'cpu'.")
        if self.runtime.onnx:
            self._ort = _import_onnxruntime()
            if self.device.type == "cuda" and "CUDAExecutionProvider" not in self._ort.get_available_providers():
                raise LatencyError(
                    "ONNX Runtime on 'cuda' needs the CUDAExecutionProvider (pip install onnxruntime-gpu)."
                )
        generator = torch.Generator().manual_seed(0)
        self.example = torch.randn((cfg.batch_size, *self.input_shape), generator=generator).to(self.device)
        self._cache: OrderedDict[int, _Prepared] = OrderedDict()

    # ---- preparation -------------------------------------------------------------------------------------
    @property
    def expected_shape(self) -> tuple[int, ...]:
        """The (batch, C, H, W) shape every timed call feeds."""
        return tuple(self.example.shape)

    def _on_device(self, model: nn.Module) -> nn.Module:
        tensors = [*model.parameters(), *model.buffers()]
        if all(t.device == self.example.device for t in tensors):
            return model
        return copy.deepcopy(model).to(self.device)

    def _check_accepts(self, model: nn.Module) -> None:
        try:
            with _eval_mode([model]), torch.inference_mode():
                model(self.example)
        except (RuntimeError, ValueError, TypeError, IndexError) as exc:
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            raise LatencyError(
                f"{type(model).__name__} does not accept an input of shape {self.expected_shape} "
                f"(batch, C, H, W): {first}. Pass the input shape the model was built for "
                "(e.g. --input-shape 1,28,28 for Fashion-MNIST)."
            ) from None

    def _build_runner(self, model: nn.Module) -> tuple[Runner, nn.Module | None]:
        x = self.example
        if isinstance(getattr(model, "onnx_bytes", None), bytes) and not self.runtime.onnx:
            raise LatencyError(f"{type(model).__name__} is an ONNX Runtime model; time it with runtime "
                               "'onnxruntime' (against a torch model timed the same way).")
        return self.runtime.build(self, model, x)

    def _ort_runner(self, model: nn.Module) -> Runner:
        ort = self._ort
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.cfg.threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        providers = ["CUDAExecutionProvider"] if self.device.type == "cuda" else ["CPUExecutionProvider"]
        blob = getattr(model, "onnx_bytes", None)  # already an ONNX model (e.g. INT8): timed as it is
        if not isinstance(blob, bytes):
            blob = export_onnx_bytes(model, self.example)
        session = ort.InferenceSession(blob, opts, providers=providers)
        feed = {session.get_inputs()[0].name: self.example.detach().cpu().numpy()}
        return lambda: session.run(None, feed)

    def prepare(self, model: nn.Module) -> _Prepared:
        """Check `model` accepts the input and build (or reuse) its runner: export / compile happen here."""
        if not isinstance(model, nn.Module):
            raise LatencyError(f"expected a torch.nn.Module, got {type(model).__name__}.")
        key = id(model)
        signature = _signature(model)
        hit = self._cache.get(key)
        if hit is not None and hit.ref() is model and hit.signature == signature:
            self._cache.move_to_end(key)
            return hit
        target = self._on_device(model)
        self._check_accepts(target)
        runner, module = self._build_runner(target)
        prepared = _Prepared(weakref.ref(model), signature, runner, module)
        self._cache[key] = prepared
        while len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)
        return prepared

    def clear_cache(self) -> None:
        """Drop prepared sessions (they are also dropped when more than a few models have been timed)."""
        self._cache.clear()

    # ---- timing ------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _timing(self, prepared: Sequence[_Prepared]) -> Iterator[None]:
        modules = [p.module for p in prepared if p.module is not None]
        with torch_threads(self.cfg.threads), _eval_mode(modules), torch.inference_mode(), _gc_paused():
            yield

    def _time_call(self, runner: Runner) -> float:
        if self.device.type == "cuda":
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            runner()
            end.record()
            end.synchronize()
            return float(start.elapsed_time(end))
        t0 = time.perf_counter_ns()
        runner()
        return (time.perf_counter_ns() - t0) / 1e6

    def time_calls(self, model: nn.Module, n: int | None = None) -> list[float]:
        """Per-call latencies in ms: `cfg.warmup` untimed calls, then `n` (default `cfg.rounds`) timed ones."""
        prepared = self.prepare(model)
        n = self.cfg.rounds if n is None else n
        with self._timing([prepared]):
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            for _ in range(self.cfg.warmup):
                prepared.runner()
            return [self._time_call(prepared.runner) for _ in range(n)]

    def measure(self, model: nn.Module) -> LatencyStats:
        """Latency distribution of one model. Absolute: compare models with `compare`, not across runs."""
        return _stats(self.time_calls(model))

    def compare(self, baseline: nn.Module, candidate: nn.Module) -> LatencyComparison:
        """Time `candidate` against `baseline` in alternation: `cfg.rounds` pairs, order swapped every pair.

        Both models of a pair run within milliseconds of each other, so a pair shares the machine's
        momentary load and clock; the ratio of a pair cancels the drift that moves absolute times by ~30%
        per hour here. The speedup is the median of the per-pair ratios (robust to a pair hit by a
        preemption) rather than the ratio of medians, which would pair times taken at different moments.
        Swapping the order (baseline first, then candidate first) cancels any first-in-pair advantage.
        """
        tb, tc = time_round_robin([(self, baseline), (self, candidate)])
        ratios = np.asarray(tb) / np.maximum(np.asarray(tc), 1e-9)
        speedup = float(np.median(ratios))
        iqr = _percentile(ratios, 75) - _percentile(ratios, 25)
        return LatencyComparison(
            latency_ms=float(np.median(tc)),
            baseline_ms=float(np.median(tb)),
            speedup=speedup,
            spread=float(iqr / speedup) if speedup > 0 else 0.0,
            n=len(ratios),
        )


@dataclass(frozen=True)
class Runtime:
    """How one runtime turns a model into a timed call."""

    name: str
    build: Callable[[LatencyMeter, nn.Module, torch.Tensor], tuple[Runner, nn.Module | None]]
    """(meter, model, example) -> (call, the torch module whose train/eval flags matter, or None)."""
    onnx: bool = False
    """Runs an ONNX export in ONNX Runtime (needs the package; takes already-exported models as they are)."""
    compiles_per_shape: bool = False
    """Pays seconds of compilation for every new model or shape (unfit for look-up tables and searches)."""


RUNTIMES: dict[str, Runtime] = {}


def register_runtime(runtime: Runtime) -> Runtime:
    """Add a runtime to the registry (config `latency.runtime` and the CLI's --runtime choose by name)."""
    RUNTIMES[runtime.name] = runtime
    return runtime


def _eager(meter: LatencyMeter, model: nn.Module, x: torch.Tensor) -> tuple[Runner, nn.Module | None]:
    return (lambda: model(x)), model


def _compiled(meter: LatencyMeter, model: nn.Module, x: torch.Tensor) -> tuple[Runner, nn.Module | None]:
    compiled = torch.compile(model)
    return (lambda: compiled(x)), model


def _onnxruntime(meter: LatencyMeter, model: nn.Module, x: torch.Tensor) -> tuple[Runner, nn.Module | None]:
    return meter._ort_runner(model), None


register_runtime(Runtime("torch", _eager))
register_runtime(Runtime("onnxruntime", _onnxruntime, onnx=True))
register_runtime(Runtime("compile", _compiled, compiles_per_shape=True))


def time_round_robin(items: Sequence[tuple[LatencyMeter, nn.Module]], rounds: int | None = None) -> list[list[float]]:
    """Per-call latencies (ms) of several models timed in turn, one call each per round.

    Each model is timed by its own meter (so inputs may differ in shape; the meters must share runtime,
    device and thread count). The order is reversed every other round, so no model always runs first.
    Rounds default to the first meter's `cfg.rounds`; `cfg.warmup` untimed calls of each come first.
    """
    if not items:
        return []
    lead = items[0][0]
    for meter, _ in items[1:]:
        a, b = meter.cfg, lead.cfg
        if (a.runtime, a.device, a.threads) != (b.runtime, b.device, b.threads):
            raise LatencyError("models timed together need meters with the same runtime, device and threads.")
    prepared = [meter.prepare(model) for meter, model in items]
    rounds = lead.cfg.rounds if rounds is None else rounds
    times: list[list[float]] = [[] for _ in items]
    order = list(range(len(items)))
    with lead._timing(prepared):
        for _ in range(lead.cfg.warmup):
            for p in prepared:
                p.runner()
        for r in range(rounds):
            for k in order if r % 2 == 0 else reversed(order):
                times[k].append(lead._time_call(prepared[k].runner))
    return times
