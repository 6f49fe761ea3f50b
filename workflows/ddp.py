"""Multi-process training: every rank of ``srun``/``torchrun`` joins one PyTorch process group.

Under ``srun -N 2 --ntasks-per-node=4 forecast train CONFIG`` (``slurm/train.sbatch``) the eight
processes train each checkpoint together with DistributedDataParallel (``models.train``), one
checkpoint after another; rank 0 writes it. The rendezvous comes from the launcher: ``torchrun`` sets
``MASTER_ADDR``/``MASTER_PORT``; under ``srun`` the address is the node that launched the step
(``SLURM_LAUNCH_NODE_IPADDR``) and the port is derived from the job id unless ``MASTER_PORT`` is set.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager

log = logging.getLogger(__name__)


def rendezvous_environment(environ=None) -> dict:
    """``MASTER_ADDR``/``MASTER_PORT`` for ``env://`` initialisation, from torchrun's or Slurm's variables.

    >>> rendezvous_environment({"SLURM_LAUNCH_NODE_IPADDR": "10.0.0.7", "SLURM_JOB_ID": "1234"})
    {'MASTER_ADDR': '10.0.0.7', 'MASTER_PORT': '21234'}
    """
    env = os.environ if environ is None else environ
    address = env.get("MASTER_ADDR") or env.get("SLURM_LAUNCH_NODE_IPADDR") or "127.0.0.1"
    port = env.get("MASTER_PORT") or str(20000 + int(env.get("SLURM_JOB_ID", "9500")) % 20000)
    return {"MASTER_ADDR": address, "MASTER_PORT": port}


BACKENDS = ("auto", "nccl", "gloo")


def choose_backend(setting: str, device: str) -> str:
    """The process group's backend: ``auto`` is NCCL when the ranks train on GPUs, gloo on CPU cores.

    Ranks that share one GPU must ask for ``gloo`` (NCCL refuses two ranks on one device).

    >>> choose_backend("auto", "cpu")
    'gloo'
    """
    from workflows.config import ConfigError

    if setting not in BACKENDS:
        raise ConfigError(f"train.backend must be one of {BACKENDS}, got {setting!r}")
    cuda = device.startswith("cuda")
    if setting == "nccl" and not cuda:
        raise ConfigError(f"train.backend 'nccl' needs GPUs, but training runs on {device!r}")
    if setting == "auto":
        import torch.distributed as dist

        return "nccl" if cuda and dist.is_nccl_available() else "gloo"
    return setting


@contextmanager
def process_group(rank: int, world: int, backend: str = "gloo", device: str = "cpu"):
    """Join the job's process group for the ``with`` block (``gloo`` on CPU cores, ``nccl`` on GPUs)."""
    import torch.distributed as dist

    if device.startswith("cuda"):
        import torch

        torch.cuda.set_device(device)  # NCCL's communicator belongs to this rank's GPU
    os.environ.update(rendezvous_environment())
    dist.init_process_group(backend, init_method="env://", rank=rank, world_size=world)
    log.info("train: rank %d of %d joined the process group at %s:%s (%s, %s)", rank, world, os.environ["MASTER_ADDR"],
             os.environ["MASTER_PORT"], backend, device)
    try:
        yield
    finally:
        dist.destroy_process_group()


def barrier() -> None:
    import torch.distributed as dist

    dist.barrier()
