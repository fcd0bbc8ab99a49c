"""CUDA memory for the TensorRT runner, through pycuda, confined to this one module.

Unverified on hardware (see README, "GPU status"): written against pycuda's driver API
(``cuda.init``, ``Device.retain_primary_context`` / ``compute_capability``, ``pagelocked_empty``,
``mem_alloc``, ``memcpy_htod_async`` / ``memcpy_dtoh_async``, ``Stream``, ``Event.record`` /
``time_since``). On the CPU every name it uses is checked against pycuda's wrapper source
(tests/test_trt_api.py) and the module runs against a strict stand-in of those calls
(tests/trt_standin.py). NVIDIA's own samples moved to cuda-python; swapping libraries means
rewriting only this file.

The runner works in the device's *primary* context (the one the CUDA runtime, and therefore
TensorRT, uses), made current around each call with :meth:`CudaDevice.active`, so any thread
may call it.
"""

from __future__ import annotations

import contextlib
from typing import Optional, Tuple

import numpy as np

from fcn_deploy.errors import FcnError


def _driver():
    from fcn_deploy.backends import not_installed

    try:
        import pycuda.driver as cuda
    except ImportError:
        raise not_installed("pycuda") from None
    return cuda


def gpu_unavailable_reason() -> Optional[str]:
    """None when TensorRT imports and pycuda sees an NVIDIA GPU, else why not (one line).

    The single probe behind the GPU test skips and ``make gpu-check``; it never raises.
    """
    try:
        import tensorrt  # noqa: F401
    except Exception as e:
        return f"TensorRT is not installed ({type(e).__name__}: {e})"
    try:
        import pycuda.driver as cuda

        cuda.init()
        if cuda.Device.count() == 0:
            return "CUDA sees no GPU"
    except Exception as e:
        return f"pycuda/CUDA is not usable ({type(e).__name__}: {e})"
    return None


def gpu_identity(device_id: int = 0) -> Tuple[str, str]:
    """(GPU name, compute capability "8.6") of ``device_id`` through pycuda; FcnError without one."""
    cuda = _driver()
    try:
        cuda.init()
        dev = cuda.Device(int(device_id))
        major, minor = dev.compute_capability()
        return str(dev.name()), f"{int(major)}.{int(minor)}"
    except cuda.Error as e:
        raise FcnError(f"CUDA cannot see device {device_id}: {e}") from None


class CudaDevice:
    """One GPU, its primary context, one stream and four timing events.

    :meth:`close` releases what it made in reverse order with the context current (events,
    stream), pops it, then releases the retained primary context; the constructor does the same
    when it fails half-way, so no context is left on the driver's stack."""

    def __init__(self, device_id: int = 0):
        cuda = _driver()
        self._cuda = cuda
        self._ctx = None
        self.stream = None
        self.events = []
        try:
            cuda.init()
            if cuda.Device.count() == 0:
                raise FcnError("no NVIDIA GPU found (CUDA reports 0 devices)")
            self.device = cuda.Device(int(device_id))
            self.name = str(self.device.name())
            major, minor = self.device.compute_capability()
            self.compute_capability = f"{int(major)}.{int(minor)}"
            self._ctx = self.device.retain_primary_context()
            with self.active():
                self.stream = cuda.Stream()
                self.events = [cuda.Event() for _ in range(4)]
        except cuda.Error as e:
            self.close()
            raise FcnError(f"CUDA initialisation failed on device {device_id}: {e}") from None
        except BaseException:
            self.close()
            raise

    @contextlib.contextmanager
    def active(self):
        """Make the primary context current for the calling thread."""
        self._ctx.push()
        try:
            yield self
        finally:
            self._cuda.Context.pop()

    def elapsed_ms(self, a: int, b: int) -> float:
        """Milliseconds between recorded events ``a`` and ``b`` (after synchronizing)."""
        return float(self.events[b].time_since(self.events[a]))

    def record(self, i: int) -> None:
        self.events[i].record(self.stream)

    def synchronize(self) -> None:
        self.stream.synchronize()

    def close(self) -> None:
        """Events and stream are destroyed with the context current, then the primary context
        is released (``detach``); safe to call twice."""
        ctx, self._ctx = self._ctx, None
        if ctx is None:
            return
        cuda = self._cuda
        ctx.push()
        try:
            # pycuda destroys a Stream / Event when its last reference goes: drop them here,
            # while the context they belong to is current.
            self.events = []
            self.stream = None
        finally:
            cuda.Context.pop()
        try:
            ctx.detach()
        except cuda.Error:
            pass


class HostDeviceBuffer:
    """A pinned host array and a device allocation of the same byte size, grown on demand."""

    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)
        self._host: Optional[np.ndarray] = None
        self._device = None
        self.capacity = 0  # elements

    def ensure(self, shape: Tuple[int, ...]) -> np.ndarray:
        """Make room for ``shape`` and return the pinned host view of that shape."""
        cuda = _driver()
        count = int(np.prod(shape)) if len(shape) else 1
        if count > self.capacity:
            self.free()
            try:
                self._host = cuda.pagelocked_empty(count, self.dtype)
                self._device = cuda.mem_alloc(max(1, count * self.dtype.itemsize))
            except cuda.Error as e:
                raise FcnError(f"cannot allocate {count * self.dtype.itemsize / 2**20:.1f} MiB on the GPU: {e}") from None
            self.capacity = count
        return self._host[:count].reshape(shape)

    def host_view(self, shape: Tuple[int, ...]) -> np.ndarray:
        """The pinned host array as ``shape`` (already allocated by :meth:`ensure`)."""
        count = int(np.prod(shape)) if len(shape) else 1
        if self._host is None or count > self.capacity:
            raise FcnError(f"internal error: host buffer of {self.capacity} elements read as {shape}")
        return self._host[:count].reshape(shape)

    @property
    def device_ptr(self) -> int:
        return int(self._device)

    def to_device(self, stream, count: int) -> None:
        _driver().memcpy_htod_async(self._device, self._host[:count], stream)

    def to_host(self, stream, count: int) -> None:
        _driver().memcpy_dtoh_async(self._host[:count], self._device, stream)

    def free(self) -> None:
        """Free the device allocation (call with its context current)."""
        if self._device is not None:
            try:
                self._device.free()
            except _driver().Error:
                pass
        self._device = None
        self._host = None
        self.capacity = 0
