"""Real-to-complex FFTs on unit-cell grids with cached pyFFTW plans.

Conventions (numpy's): the forward transform X[m] = Σ_r ρ[r] exp(-2πi m·r/n)
and the backward y[r] = Σ_m Y[m] exp(+2πi m·r/n), both *unnormalised*;
the last axis is halved (n₃//2 + 1 entries).  Crystallographic structure
factors use exp(+2πi h·x), so F(h) ∝ conj(X[h]) = X[-h].

Plans are made once per (shape, threads) and kept with their aligned
input/output buffers (Frigo & Johnson 2005, Proc. IEEE 93, 216).  New shapes
get FFTW_ESTIMATE plans (instant; FFTW_MEASURE planning took 2–25 s per grid
on a loaded 2-core machine, and time-limited measuring is neither faster to
run nor re-usable as wisdom).  Grids of at least 2¹⁸ points use FFTW_MEASURE
plans when wisdom for them is known: stored in
``$XDG_CACHE_HOME/refinekit/`` (default ``~/.cache``), written atomically
when a process runs with ``REFINEKIT_FFTW_MEASURE=1`` (it then measures
shapes without wisdom once, which takes seconds).  The wisdom file is never
required: missing, unreadable or unwritable files are ignored.
"""

from __future__ import annotations

import os
import json
import platform
import tempfile
import threading
from functools import lru_cache
from pathlib import Path

import numpy as np

_LOCK = threading.Lock()
MEASURE_MIN_POINTS = 1 << 18
_WISDOM_STATE = {"loaded": False}


def measure_new_shapes() -> bool:
    """True when FFTW_MEASURE plans are to be made (and stored) for shapes without wisdom."""
    return os.environ.get("REFINEKIT_FFTW_MEASURE", "0") == "1"


def wisdom_path() -> Path:
    """File holding this machine's FFTW wisdom."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "refinekit" / f"fftw-wisdom-{platform.machine()}-{platform.node()}.json"


def _load_wisdom() -> None:
    """Import stored wisdom once per process (silently nothing when absent or unreadable)."""
    if _WISDOM_STATE["loaded"]:
        return
    _WISDOM_STATE["loaded"] = True
    path = wisdom_path()
    if not path.is_file():
        return
    import pyfftw
    try:
        text = json.loads(path.read_text(encoding="ascii"))
        pyfftw.import_wisdom(tuple(part.encode("ascii") for part in text))
    except (OSError, ValueError, TypeError, AttributeError):  # damaged file: only costs planning time
        pass


def _save_wisdom() -> None:
    """Write the process's accumulated wisdom atomically (temporary file + rename)."""
    path = wisdom_path()
    import pyfftw
    text = json.dumps([part.decode("ascii") for part in pyfftw.export_wisdom()])
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".wisdom-")
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except OSError:  # read-only home, full disk: plans still work, only not remembered
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def _plan(pyfftw, a, b, direction: str, flags: tuple[str, ...], threads: int, big: bool):
    """An FFTW plan a → b and whether it was newly measured (see the module notes)."""
    def make(*extra):
        return pyfftw.FFTW(a, b, axes=(0, 1, 2), direction=direction, flags=(*extra, *flags),
                           threads=threads)
    if big:
        try:
            return make("FFTW_MEASURE", "FFTW_WISDOM_ONLY"), False
        except RuntimeError:  # no wisdom for this shape
            if measure_new_shapes():
                return make("FFTW_MEASURE"), True
    return make("FFTW_ESTIMATE"), False


@lru_cache(maxsize=4096)
def good_size(n: int, even: bool = True) -> int:
    """Smallest m ≥ n whose prime factors are 2, 3 and 5 (m even when asked)."""
    m = max(int(n), 1)
    while True:
        if not (even and m % 2):
            r = m
            for p in (2, 3, 5):
                while r % p == 0:
                    r //= p
            if r == 1:
                return m
        m += 1


def grid_shape(cell_lengths: np.ndarray, d_min: float, rate: float,
               minimum: np.ndarray | None = None) -> tuple[int, int, int]:
    """Grid with spacing ≤ d_min/(2·rate) Å along each edge (FFT-friendly sizes).

    ``minimum`` (3,) forces at least that many points per axis (e.g. 2·k_max+1
    so no requested index reaches the Nyquist plane).
    """
    need = np.ceil(np.asarray(cell_lengths, dtype=np.float64) * 2.0 * rate / d_min).astype(int)
    if minimum is not None:
        need = np.maximum(need, np.asarray(minimum, dtype=int))
    return tuple(good_size(int(n)) for n in need)


class RealFFT:
    """A pair of cached plans: real grid → half-complex grid and back.

    ``forward(real)`` returns the half-complex transform (a view of an
    internal buffer, valid until the next call); ``backward(half)`` returns
    the unnormalised real inverse (likewise a view).  The buffers
    ``real_in`` and ``half_in`` may be filled in place to avoid copies.
    """

    def __init__(self, shape: tuple[int, int, int], threads: int = 2):
        import pyfftw

        self.shape = tuple(int(n) for n in shape)
        half = (*self.shape[:-1], self.shape[-1] // 2 + 1)
        self.real_in = pyfftw.empty_aligned(self.shape, dtype="float64")
        self.half_out = pyfftw.empty_aligned(half, dtype="complex128")
        self.half_in = pyfftw.empty_aligned(half, dtype="complex128")
        self.real_out = pyfftw.empty_aligned(self.shape, dtype="float64")
        big = int(np.prod(self.shape)) >= MEASURE_MIN_POINTS
        if big:
            _load_wisdom()
        self._fwd, new_f = _plan(pyfftw, self.real_in, self.half_out, "FFTW_FORWARD", (), threads, big)
        self._bwd, new_b = _plan(pyfftw, self.half_in, self.real_out, "FFTW_BACKWARD",
                                 ("FFTW_DESTROY_INPUT",), threads, big)
        if new_f or new_b:
            _save_wisdom()

    def forward(self, real: np.ndarray | None = None) -> np.ndarray:
        """Half-complex X[m] of ``real`` (or of ``real_in`` when None)."""
        if real is not None and real is not self.real_in:
            self.real_in[...] = real
        self._fwd.execute()
        return self.half_out

    def backward(self, half: np.ndarray | None = None) -> np.ndarray:
        """Unnormalised real inverse of ``half`` (or of ``half_in``); destroys the input."""
        if half is not None and half is not self.half_in:
            self.half_in[...] = half
        self._bwd.execute()
        return self.real_out


_PLANS: dict[tuple, RealFFT] = {}


def real_fft(shape: tuple[int, int, int], threads: int = 2) -> RealFFT:
    """The cached :class:`RealFFT` for ``shape`` and ``threads`` (made on first use)."""
    key = (tuple(int(n) for n in shape), int(threads))
    with _LOCK:
        plan = _PLANS.get(key)
        if plan is None:
            plan = RealFFT(key[0], key[1])
            if len(_PLANS) >= 8:
                _PLANS.pop(next(iter(_PLANS)))
            _PLANS[key] = plan
        return plan


__all__ = ["good_size", "grid_shape", "RealFFT", "real_fft", "wisdom_path", "measure_new_shapes"]
