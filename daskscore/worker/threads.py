"""Intra-op threads in worker processes: how many each may use, and capping them.

Two worker processes each running a multi-threaded numerical library on two cores run about 4x
slower than with one thread each, so every worker gets ``cores // workers`` threads: through
environment variables set before the process starts (:data:`THREAD_ENV_VARS`), and, for a
library that a forked worker inherited already loaded, through the library itself
(:func:`limit_blas_threads`, :func:`cap_torch`).

The script's own choice wins: a deployment that sets one of those variables
(``settings.environment_variables``) gets its value, as a fresh process would, and an
``init()`` that sets torch's thread count keeps it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

#: Environment variables that cap the intra-op threads of numpy's BLAS, OpenMP (torch) and
#: friends.  Set in each worker process before it starts, so that workers × threads ≤ cores:
#: two processes each running a multi-threaded library on two cores run 4x slower.
THREAD_ENV_VARS = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
)


def cpu_count() -> int:
    """Cores this process may use (the affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


#: OpenBLAS entry points that set its thread count (numpy's bundled build, then a system one).
_OPENBLAS_SETTERS = (
    "scipy_openblas_set_num_threads64_",
    "scipy_openblas_set_num_threads",
    "openblas_set_num_threads64_",
    "openblas_set_num_threads",
)


def limit_blas_threads(n: int) -> None:
    """Cap the threads of a BLAS library that is loaded already.

    ``OPENBLAS_NUM_THREADS`` and friends count only when the library loads; a worker forked
    from a process that had imported numpy inherits its BLAS with one thread per core.  Uses
    threadpoolctl when installed, else OpenBLAS's own setter; best effort, never raises.
    """
    if "numpy" not in sys.modules:
        return  # not loaded: the environment variables will do
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=n, user_api="blas")
        return
    except ImportError:
        pass
    except Exception:  # noqa: BLE001 - best effort
        return
    import ctypes

    try:
        with open("/proc/self/maps", encoding="utf-8") as fh:
            libs = {line.split()[-1] for line in fh if "openblas" in line.lower()}
        for lib in sorted(libs):
            dll = ctypes.CDLL(lib)
            setter = next((getattr(dll, f) for f in _OPENBLAS_SETTERS if hasattr(dll, f)), None)
            if setter is not None:
                setter(n)
    except (OSError, IndexError):
        pass


def intra_op_threads(workers: int) -> int:
    """Threads each worker's numerical libraries may use: cores // workers, at least 1."""
    return max(1, cpu_count() // max(1, workers))


#: The variables that set torch's intra-op threads, in the order torch reads them ...
TORCH_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
#: ... and a BLAS library's.
BLAS_VARS = ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS")


def chosen_threads(env: Mapping[str, str], names: tuple[str, ...] = BLAS_VARS) -> int | None:
    """The thread count the deployment chose (``env``: its ``settings.environment_variables``)
    in the first of ``names`` it sets to a positive whole number; None when it chose none."""
    for name in names:
        try:
            value = int(str(env.get(name, "")).strip())
        except ValueError:
            continue
        if value > 0:
            return value
    return None


def torch_threads() -> int | None:
    """torch's intra-op thread count now, if torch is loaded in this process (else None)."""
    torch = sys.modules.get("torch")
    try:
        return int(torch.get_num_threads()) if torch is not None else None
    except Exception:  # noqa: BLE001 - a torch without it: nothing to cap
        return None


def cap_torch(n: int | None, env: Mapping[str, str], before: int | None) -> None:
    """After the script's import and ``init()``: give a torch that this process had loaded
    before them (``before``: its thread count then; a worker forked from a server that
    preloaded torch inherits its threads) the deployment's thread count, else ``n``, unless
    ``init()`` set its own.  A torch the script's import loaded read the thread variables as it
    loaded (the cap, or the deployment's): it is left as the script left it."""
    torch = sys.modules.get("torch")
    if not n or torch is None or before is None or torch_threads() != before:
        return
    try:
        torch.set_num_threads(chosen_threads(env, TORCH_VARS) or n)
    except Exception:  # noqa: BLE001 - best effort
        pass
