"""CUDA memory for the TensorRT runner, through pycuda, confined to this one module.

Unverified on hardware: this project's machines have no NVIDIA GPU, so this module is written
against pycuda's documented driver API (``cuda.init``, ``Device.retain_primary_context``,
``pagelocked_empty``, ``mem_alloc``, ``memcpy_htod_async`` / ``memcpy_dtoh_async``,
``Stream``, ``Event.record`` / ``time_since``) and is never executed by the CPU test suite.
NVIDIA's own samples moved to cuda-python; swapping libraries means rewriting only this file.

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
    try:
        import pycuda.driver as cuda
    except ImportError:
        raise FcnError("pycuda is not installed: pip install pycuda (needs the CUDA toolkit and an NVIDIA GPU)") from None
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


class CudaDevice:
    """One GPU, its primary context, one stream and four timing events."""

    def __init__(self, device_id: int = 0):
        cuda = _driver()
        try:
            cuda.init()
            if cuda.Device.count() == 0:
                raise FcnError("no NVIDIA GPU found (CUDA reports 0 devices)")
            self.device = cuda.Device(int(device_id))
            self.name = self.device.name()
            self._ctx = self.device.retain_primary_context()
            self._ctx.push()
            try:
                self.stream = cuda.Stream()
                self.events = [cuda.Event() for _ in range(4)]
            finally:
                cuda.Context.pop()
        except cuda.Error as e:
            raise FcnError(f"CUDA initialisation failed on device {device_id}: {e}") from None
        self._cuda = cuda

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
        try:
            self._ctx.detach()
        except Exception:
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

    @property
    def device_ptr(self) -> int:
        return int(self._device)

    def to_device(self, stream, count: int) -> None:
        _driver().memcpy_htod_async(self._device, self._host[:count], stream)

    def to_host(self, stream, count: int) -> None:
        _driver().memcpy_dtoh_async(self._host[:count], self._device, stream)

    def free(self) -> None:
        if self._device is not None:
            try:
                self._device.free()
            except Exception:
                pass
        self._device = None
        self._host = None
        self.capacity = 0
