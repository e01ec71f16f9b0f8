"""Process group setup for torchrun and Slurm, and the small collectives the trainer needs.

Ranks come from RANK / WORLD_SIZE / LOCAL_RANK (torchrun) or SLURM_PROCID / SLURM_NTASKS /
SLURM_LOCALID (srun); MASTER_ADDR / MASTER_PORT from the environment or, under Slurm, the
first node of SLURM_JOB_NODELIST and a port derived from the job id. gloo on CPU, nccl on CUDA.

Strategies (`wrap`): DDP, or FSDP (PyTorch's `fully_shard`, FSDP2) with the whole loss module
as one unit: parameters, gradients and AdamW state are sharded between steps, the parameters
are gathered once per step and the gradients reduce-scattered once. One unit because a rank
runs one DiT pass per MR branch its samples drew, so ranks make different numbers of passes in
a step; per-block units would issue different numbers of collectives and hang (assumed design,
docs/DESIGN.md section 2.4). Under bf16 training (CUDA) FSDP gathers the parameters in bf16
(`MixedPrecisionPolicy`: half the all-gather traffic and gathered memory of fp32) and
reduce-scatters gradients in fp32; the sharded parameters, which AdamW updates, stay fp32.
Works on CPU with gloo too.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

import torch
import torch.distributed as dist


class DistributedError(RuntimeError):
    """A distributed setup that cannot work (bad ranks, batch not divisible, ...)."""


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    source: str = "single"             # single | torchrun | slurm

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def first_node(nodelist: str) -> str:
    """The first host of a Slurm node list: 'gpu[03-05,7],cpu1' -> 'gpu03'."""
    match = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist.strip())
    if not match:
        raise DistributedError(f"cannot parse SLURM_JOB_NODELIST={nodelist!r}")
    prefix, ranges = match.groups()
    if not ranges:
        return prefix
    return prefix + ranges.split(",")[0].split("-")[0]


def detect(environ=None) -> DistEnv:
    """The process's place in the job, from torchrun's or Slurm's variables."""
    env = os.environ if environ is None else environ
    try:
        if "RANK" in env and "WORLD_SIZE" in env:
            found = DistEnv(int(env["RANK"]), int(env["WORLD_SIZE"]),
                            int(env.get("LOCAL_RANK", 0)), "torchrun")
        elif "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
            found = DistEnv(int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]),
                            int(env.get("SLURM_LOCALID", 0)), "slurm")
        else:
            return DistEnv()
    except ValueError as err:
        raise DistributedError(f"bad rank variables in the environment: {err}") from None
    if not 0 <= found.rank < found.world:
        raise DistributedError(f"rank {found.rank} outside world size {found.world}")
    return found


def rendezvous_env(env: DistEnv, environ=None) -> dict[str, str]:
    """MASTER_ADDR / MASTER_PORT for init_process_group (set from Slurm when missing)."""
    source = os.environ if environ is None else environ
    addr, port = source.get("MASTER_ADDR"), source.get("MASTER_PORT")
    if addr is None and "SLURM_JOB_NODELIST" in source:
        addr = first_node(source["SLURM_JOB_NODELIST"])
    if port is None and "SLURM_JOB_ID" in source:
        port = str(15000 + int(source["SLURM_JOB_ID"]) % 20000)
    if addr is None or port is None:
        raise DistributedError(f"{env.world} processes ({env.source}) but MASTER_ADDR / "
                               f"MASTER_PORT are not set (and no SLURM_JOB_NODELIST / "
                               f"SLURM_JOB_ID to derive them from)")
    return {"MASTER_ADDR": addr, "MASTER_PORT": str(port)}


def default_device(env: DistEnv) -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", env.local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def init(env: DistEnv, device: torch.device) -> bool:
    """Start the process group if the job has several processes; True if this call did."""
    if not env.distributed or dist.is_initialized():
        return False
    os.environ.update(rendezvous_env(env))
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, rank=env.rank, world_size=env.world)
    return True


def wrap(module: torch.nn.Module, strategy: str, device: torch.device,
         param_dtype: torch.dtype | None = None) -> torch.nn.Module:
    """`module` ready for a multi-process step: DDP (unused parameters found per step) or
    FSDP2 sharded in place (see the module docstring). fp32 parameters in both, and bf16
    matmuls from the trainer's autocast; with `param_dtype` (the autocast dtype) FSDP gathers
    the parameters in that dtype for the step. Forward inputs are not cast (the loss module
    forms its flow targets from fp32 latents)."""
    if strategy == "fsdp":
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
        fully_shard(module, mp_policy=MixedPrecisionPolicy(
            param_dtype=param_dtype, reduce_dtype=torch.float32, cast_forward_inputs=False))
        return module
    from torch.nn.parallel import DistributedDataParallel
    return DistributedDataParallel(module,
                                   device_ids=[device] if device.type == "cuda" else None,
                                   find_unused_parameters=True)


def full(value: torch.Tensor) -> torch.Tensor:
    """A DTensor (FSDP2's sharded parameters, a replicated gradient norm) as the whole plain
    tensor (a collective: every rank calls it); a plain tensor as it is."""
    return value.full_tensor() if hasattr(value, "full_tensor") else value


def shard_like(value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A whole tensor laid out as `like` (this rank's shard when `like` is a DTensor)."""
    value = value.to(like.device)
    if not hasattr(like, "device_mesh"):
        return value
    from torch.distributed.tensor import distribute_tensor
    return distribute_tensor(value, like.device_mesh, like.placements)


def local_batch(global_batch: int, world: int) -> int:
    if global_batch % world:
        raise DistributedError(f"stage.batch_size = {global_batch} is not divisible by the "
                               f"{world} processes; choose a batch size that is a multiple of "
                               f"the process count, or another process count")
    return global_batch // world


def mean_across(values: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """Average a float tensor over processes (identity on one process)."""
    if not env.distributed:
        return values
    values = values.clone()
    dist.all_reduce(values)
    return values / env.world


def any_across(flag: bool, env: DistEnv, device: torch.device) -> bool:
    """True on every process if it is True on any (so all stop at the same step)."""
    if not env.distributed:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def barrier(env: DistEnv) -> None:
    if env.distributed and dist.is_initialized():
        dist.barrier()


def broadcast_object(obj, env: DistEnv):
    """Rank 0's `obj` on every process."""
    if not env.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(obj, env: DistEnv) -> list:
    """Every process's `obj`, in rank order (a one-item list on one process)."""
    if not env.distributed:
        return [obj]
    found = [None] * env.world
    dist.all_gather_object(found, obj)
    return found
