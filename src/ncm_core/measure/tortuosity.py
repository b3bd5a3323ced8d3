"""Tortuosity factor of a phase by TauFactor (Kench et al., SoftwareX 2023), on the CPU or a GPU.

TauFactor solves steady diffusion through the phase (over-relaxed iterations on a voxel grid, fixed
values on the two faces across the flux axis, no flux through the other faces) and reports the
tortuosity factor ``tau = phase fraction / relative effective diffusivity``: 1 for straight channels
along the axis, larger when paths wind or narrow. It accepts 2D images (one voxel thick) and 3D volumes;
its flux runs along its first axis, so the array is turned to put ``axis`` first.

Extended here: a phase that does not connect the two faces is reported as infinite tortuosity with a
note (TauFactor prints a warning and returns 0 internally); the solver's memory is estimated before it
starts (:func:`solver_memory`) and a volume too large for the device is one clear error; the iterations
run in steps so that progress is reported and a cancel stops the run; TauFactor's printing is silenced.
"""

from __future__ import annotations

import contextlib
import io
import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ncm_core.errors import NcmError
from ncm_core.measure.interfaces import percolates
from ncm_core.progress import ProgressFn, check_cancel, report

#: Bytes per voxel that TauFactor's solver holds on its device (float32: image, field, neighbour
#: factors, two chequerboards, increments and fluxes) and on the host while it starts (a float64
#: chequerboard and three int64 index grids).
DEVICE_BYTES_PER_VOXEL = 48
HOST_BYTES_PER_VOXEL = 40
#: Iterations between progress reports and cancel checks.
STEP = 100


@dataclass
class TortuosityResult:
    """The tortuosity factor of one phase along one axis and how it was found."""

    tau: float  #: tortuosity factor (inf: the phase does not connect the two faces)
    effective_diffusivity: float  #: relative effective diffusivity D_eff / D_0 = volume_fraction / tau
    volume_fraction: float  #: share of the image in the phase
    axis: int
    percolating: bool
    converged: bool
    iterations: int
    seconds: float
    device: str
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("tau", "effective_diffusivity"):  # JSON has no infinity
            if not math.isfinite(d[k]):
                d[k] = None
        return d


def solver_memory(shape: tuple[int, ...], device: str = "cpu") -> int:
    """Bytes TauFactor needs for an image of ``shape`` on ``device`` (the host share included on CPU)."""
    n = int(np.prod(shape))
    return n * (DEVICE_BYTES_PER_VOXEL + (HOST_BYTES_PER_VOXEL if device == "cpu" else 0))


def available_memory(device: Any) -> int:
    """Free bytes on ``device`` (a torch device): GPU memory from CUDA, else the host's available RAM."""
    if getattr(device, "type", str(device)) == "cuda":
        import torch

        return int(torch.cuda.mem_get_info(device)[0])
    import psutil

    return int(psutil.virtual_memory().available)


def tortuosity_factor(
    mask: np.ndarray,
    axis: int = 0,
    device: str | None = None,
    *,
    iter_limit: int = 20000,
    conv_crit: float = 1e-2,
    progress: ProgressFn | None = None,
    cancel: Any = None,
) -> TortuosityResult:
    """Tortuosity factor of the phase ``mask`` (2D or 3D boolean, True = the conducting phase, e.g. pore)
    along ``axis`` (0 = first axis: the through-plane direction of a cross-section whose rows run along
    the collector). ``device``: ``"cpu"``, ``"cuda"`` or None (a GPU when present). ``conv_crit`` is
    TauFactor's: the largest relative spread of the flux between slices at convergence."""
    from ncm_core.devices import resolve_device

    m = np.asarray(mask, bool)
    if m.ndim not in (2, 3):
        raise NcmError(f"tortuosity needs a 2D image or a 3D volume, got {m.ndim} dimensions")
    if not -m.ndim <= axis < m.ndim:
        raise NcmError(f"tortuosity axis {axis} is not an axis of a {m.ndim}-D image")
    axis %= m.ndim
    if min(m.shape) < 2:
        raise NcmError(f"tortuosity needs at least 2 pixels along every axis, got {m.shape}")
    dev = resolve_device(device or "auto")
    vf = float(m.mean())
    if not percolates(m, axis):
        note = "the phase does not connect the two faces across this axis: no path, infinite tortuosity"
        return TortuosityResult(math.inf, 0.0, vf, axis, False, True, 0, 0.0, str(dev), note)
    need, free = solver_memory(m.shape, dev.type), available_memory(dev)
    if need > free:
        raise NcmError(
            f"tortuosity of a {'x'.join(map(str, m.shape))} image needs about {need / 2**30:.1f} GiB on {dev} "
            f"and {free / 2**30:.1f} GiB is free: pick a smaller sub-volume (--region)"
        )
    return _solve(np.moveaxis(m, axis, 0).astype(np.uint8), axis, vf, dev, iter_limit, conv_crit, progress, cancel)


def _solve(img, axis, vf, dev, iter_limit, conv_crit, progress, cancel) -> TortuosityResult:  # noqa: PLR0913
    import taufactor as tau_lib
    import torch

    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        solver = tau_lib.Solver(np.ascontiguousarray(img), device=dev)
        done = 0
        while not solver.converged and done < iter_limit:
            check_cancel(cancel)
            done = min(done + STEP, iter_limit)
            solver.solve(iter_limit=done, verbose=False, conv_crit=conv_crit)
            report(progress, done, iter_limit, "tortuosity")
    tau = float(np.asarray(solver.tau).reshape(-1)[0])
    converged = bool(solver.converged)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    seconds = time.perf_counter() - start
    note = "" if converged else f"not converged after {solver.iter} iterations: the value is an estimate"
    if not math.isfinite(tau) or tau <= 0:
        return TortuosityResult(
            math.inf, 0.0, vf, axis, False, converged, int(solver.iter), seconds, str(dev), "no conducting path"
        )
    return TortuosityResult(tau, vf / tau, vf, axis, True, converged, int(solver.iter), seconds, str(dev), note)
