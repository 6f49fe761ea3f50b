"""Numerical mode of a process on a GPU: deterministic (the default for ensembles) or fast.

A member regenerated alone (``--members A:B``) is bit-identical to the same member in the full run only
if every kernel gives the same bits for the same inputs. The engine already fixes the inputs (each member
is computed inside its own fixed batch window, see ``ensembles.plan``); this module fixes the kernels:

- ``torch.use_deterministic_algorithms(True)``: an operation without a deterministic CUDA kernel raises
  instead of silently using atomics;
- ``CUBLAS_WORKSPACE_CONFIG=:4096:8``: cuBLAS needs a fixed workspace to be deterministic; it is read when
  cuBLAS starts, so it must be in the environment before the first CUDA matrix product;
- uninitialised memory is not filled (every buffer the engine allocates is overwritten whole);
- TF32 off for matrix products and cuDNN (float32 stays float32: results do not depend on the GPU's
  choice of tensor-core path), ``cudnn.benchmark`` off (no timing-based choice of algorithm) and
  ``cudnn.deterministic`` on.

The fast mode allows TF32 and cuDNN autotuning and drops the determinism requirement. On the CPU neither
mode changes anything: the CPU kernels are deterministic already.
"""

from __future__ import annotations

import logging
import os

import torch

log = logging.getLogger(__name__)

CUBLAS_WORKSPACE = ":4096:8"


def set_numerical_mode(deterministic: bool, device: str | torch.device, environ=None, warn_only: bool = False) -> dict:
    """Apply the deterministic or the fast GPU mode to this process; returns what was set.

    Call it before the first CUDA operation (the engine and training do it before loading a model).
    On a CPU ``device`` it sets nothing and returns ``{}``. ``warn_only``: an operation without a
    deterministic kernel warns instead of raising (training: some backward kernels have none, and DDP's
    gradient sums are not bit-reproducible anyway; ensembles raise).

    >>> set_numerical_mode(True, "cpu")
    {}
    """
    if torch.device(device).type != "cuda":
        return {}
    env = os.environ if environ is None else environ
    if deterministic:
        if env.get("CUBLAS_WORKSPACE_CONFIG") not in (":4096:8", ":16:8"):
            if torch.cuda.is_initialized():
                log.warning("CUBLAS_WORKSPACE_CONFIG set after CUDA started: cuBLAS may not be deterministic")
            env["CUBLAS_WORKSPACE_CONFIG"] = CUBLAS_WORKSPACE
    torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
    # deterministic algorithms would also fill every torch.empty with NaN: the engine allocates gigabytes
    # of host buffers per lead that it overwrites whole, so that filling buys nothing
    torch.utils.deterministic.fill_uninitialized_memory = False
    torch.backends.cuda.matmul.allow_tf32 = not deterministic
    torch.backends.cudnn.allow_tf32 = not deterministic
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.deterministic = deterministic
    torch.set_float32_matmul_precision("highest" if deterministic else "high")
    settings = {"deterministic_algorithms": deterministic, "tf32": not deterministic, "cudnn_benchmark": not deterministic,
                "cublas_workspace_config": env.get("CUBLAS_WORKSPACE_CONFIG", "")}
    log.info("numerical mode on %s: %s", device, settings)
    return settings
