"""Two gloo processes (torchrun; DDP and FSDP) equal one process with the same global batch;
FSDP checkpoints and resumes; rank setup."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from maskgwm.model.model_file import load_model
from maskgwm.train import distributed as dist_
from maskgwm.train.batches import frames_for_step
from maskgwm.train.trainer import warmup_factor

SCRIPT = textwrap.dedent("""
    import os
    import sys
    import torch
    torch.set_num_threads(1)
    if os.environ.get("RANK", "-") == os.environ.get("UNREADABLE_ON_RANK"):   # a read fault
        import maskgwm.train.checkpoint_files as ckpt
        def unreadable(*args, **kwargs):
            raise OSError("injected read error")
        ckpt.torch.load = unreadable
    from maskgwm.config.resolve import resolve_run_config
    from maskgwm.train.options import TrainOptions
    from maskgwm.train.trainer import Trainer
    out, cache, strategy, batch, stop_at, ema = sys.argv[1:7]
    config = resolve_run_config("1c", "ci", "ours", {
        "stage.steps": 3, "stage.batch_size": int(batch),
        "optim.ema_decay": 0.0 if ema == "none" else float(ema)})
    trainer = Trainer(config, out, options=TrainOptions(
        workers=0, cache_dir=cache, checkpoint_every=0, strategy=strategy, sample_every=2,
        sample_steps=2))
    print(trainer.run(stop=lambda: trainer.step >= int(stop_at)))
""")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(tmp_path: Path, out: str, nproc: int, strategy: str = "ddp", batch: int = 2,
        stop_at: int = 10**9, ema: str = "none", unreadable_on_rank: int | None = None,
        fails: bool = False) -> str:
    """Train; returns stderr. With `unreadable_on_rank`, that rank cannot read checkpoints.
    The run must fail if `fails`, else succeed."""
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID", "SLURM_NTASKS")}
    env["OMP_NUM_THREADS"] = "1"
    if unreadable_on_rank is not None:
        env["UNREADABLE_ON_RANK"] = str(unreadable_on_rank)
    if nproc == 1:
        cmd = [sys.executable, str(script)]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
               "--master_addr=127.0.0.1", f"--master_port={free_port()}", str(script)]
    args = [str(tmp_path / out), str(tmp_path / "cache"), strategy, str(batch), str(stop_at),
            ema]
    done = subprocess.run(cmd + args, env=env, capture_output=True, text=True, timeout=300)
    assert (done.returncode != 0) == fails, done.stderr[-3000:]
    return done.stderr


def assert_same_training(tmp_path: Path, one: str, two: str) -> None:
    """Per-step losses, MR branch counts, gradient norms and final weights agree."""
    rows = {}
    for name in (one, two):
        lines = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
        rows[name] = [json.loads(line) for line in lines]
    assert [r["step"] for r in rows[one]] == [r["step"] for r in rows[two]] == [1, 2, 3]
    for a, b in zip(rows[one], rows[two]):
        assert abs(a["loss"] - b["loss"]) < 1e-5 and a["branches"] == b["branches"]
        assert abs(a["grad_norm"] - b["grad_norm"]) < 1e-4
    first = load_model(tmp_path / one / "model.pt")[0].state_dict()
    second = load_model(tmp_path / two / "model.pt")[0].state_dict()
    assert first.keys() == second.keys()
    assert max(float((first[k] - second[k]).abs().max()) for k in first) < 1e-5


def test_two_processes_equal_one(tmp_path):
    run(tmp_path, "one", 1)
    run(tmp_path, "two", 2)
    assert_same_training(tmp_path, "one", "two")
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["local_batch"] == 1


def test_fsdp_two_processes_equal_one_across_a_resume(tmp_path):
    """FSDP2 over gloo, 2 samples per rank (so the ranks draw different MR branches and make
    different numbers of passes), with EMA, stopped after step 1 (gathered checkpoint) and
    resumed (sharded optimizer state and EMA restored): the same training as one process, and
    model.pt holds the same EMA weights. A checkpoint of one process resumes under FSDP on
    two; a rank that cannot read the checkpoint rank 0 chose stops both ranks."""
    run(tmp_path, "one", 1, batch=4, ema="0.5")
    run(tmp_path, "fsdp", 2, "fsdp", batch=4, stop_at=1, ema="0.5")
    assert [p.name for p in (tmp_path / "fsdp" / "checkpoints").iterdir()] == \
        ["step-00000001.pt"]
    assert not (tmp_path / "fsdp" / "model.pt").exists()
    error = run(tmp_path, "fsdp", 2, "fsdp", batch=4, ema="0.5", unreadable_on_rank=1,
                fails=True)
    assert "on every rank (rank 1: OSError: injected read error)" in error
    assert str(tmp_path / "fsdp" / "checkpoints" / "step-00000001.pt") in error
    error = run(tmp_path, "fsdp", 2, "fsdp", batch=2, ema="0.5", fails=True)  # another config
    assert "on every rank (rank 0: CheckpointMismatchError:" in error
    run(tmp_path, "fsdp", 2, "fsdp", batch=4, ema="0.5")
    assert_same_training(tmp_path, "one", "fsdp")
    run(tmp_path, "switched", 1, batch=4, stop_at=1, ema="0.5")
    run(tmp_path, "switched", 2, "fsdp", batch=4, ema="0.5")
    assert_same_training(tmp_path, "one", "switched")
    samples = tmp_path / "fsdp" / "samples" / "step-00000002"   # from the gathered weights
    assert (samples / "manifest.json").is_file() or any(samples.glob("*.json"))
    last = torch.load(tmp_path / "fsdp" / "checkpoints" / "step-00000003.pt", weights_only=True)
    exported = load_model(tmp_path / "fsdp" / "model.pt")[0].state_dict()
    assert last["ema"] and all(torch.equal(exported[k], v) for k, v in last["ema"].items())
    assert any(not torch.equal(v, last["model"]["state_dict"][k]) for k, v in last["ema"].items())
    rows = [json.loads(x) for x in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    assert any(r["branches"]["spatial"] and r["branches"]["temporal"] for r in rows)
    summary = json.loads((tmp_path / "fsdp" / "summary.json").read_text())
    assert summary["strategy"] == "fsdp" and summary["local_batch"] == 2


MIXED_PRECISION_SCRIPT = textwrap.dedent("""
    import copy
    import sys
    import torch
    import torch.distributed as dist
    torch.set_num_threads(1)
    from maskgwm.config.schema import MaskConfig, ModelConfig
    from maskgwm.model.dit import MaskGWMDiT
    from maskgwm.model.objective import ObjectiveSettings
    from maskgwm.train import distributed as dist_
    from maskgwm.train.trainer import LossModule
    device = torch.device(sys.argv[1])
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    model = MaskGWMDiT(ModelConfig(preset="tiny"), mask_config=MaskConfig(
        ratio=0.25, spatial=True, temporal=True, row=True, shift=True)).to(device)
    settings = ObjectiveSettings(model.mask_config, max_cond_frames=1)
    reference = LossModule(copy.deepcopy(model), settings, seed=0)
    generator = torch.Generator().manual_seed(1)
    p = model.preset
    z0, text, pooled = (torch.randn(*shape, generator=generator).to(device) for shape in (
        (2, 3, 1, p.in_channels, p.latent_height, p.latent_width),
        (2, 5, p.joint_attention_dim), (2, p.pooled_projection_dim)))
    mine = slice(rank * 2 // world, (rank + 1) * 2 // world)
    gathered = set()
    model.transformer_blocks[0].register_forward_pre_hook(
        lambda block, args: gathered.add(block.norm1.linear.weight.dtype))
    module = LossModule(model, settings, seed=0)
    module.touch_all = True
    dist_.wrap(module, "fsdp", device, torch.bfloat16)
    with torch.autocast(device.type, dtype=torch.bfloat16):
        local = module(z0[mine], text[mine], pooled[mine], list(range(2))[mine])
        whole = reference(z0, text, pooled, [0, 1])
    local["loss"].backward()
    whole["loss"].backward()
    loss = local["loss"].detach().clone()
    dist.all_reduce(loss)
    assert gathered == {torch.bfloat16}, gathered
    assert all(q.dtype == torch.float32 and q.grad.dtype == torch.float32
               for q in model.parameters()), "sharded weights and gradients must stay fp32"
    expected = float(whole["loss"].detach())
    assert abs(float(loss) / world - expected) < 2e-2 * abs(expected)
    ours = torch.cat([dist_.full(q.grad).reshape(-1) for q in model.parameters()])
    theirs = torch.cat([q.grad.reshape(-1) for q in reference.model.parameters()])
    error = float((ours - theirs).norm() / theirs.norm())
    assert 0 < error < 1e-2, error      # measured 2.5e-3 (2 gloo processes, CPU); ~4x that
    print("relative gradient error", error)
""")


@pytest.mark.parametrize("device, processes", [
    ("cpu", 2), pytest.param("cuda", 1, marks=pytest.mark.skipif(
        not torch.cuda.is_available(), reason="needs a CUDA GPU (NCCL, one process)"))])
def test_fsdp_gathers_bf16_weights_and_reduces_fp32_gradients(tmp_path, device, processes):
    """Under bf16 autocast, FSDP gathers bf16 parameters for the step (half the traffic and
    gathered memory), keeps the sharded weights and their gradients in fp32, and trains as
    one process with fp32 weights and the same global batch does, within bf16 rounding.
    On the CPU: 2 gloo processes; on a GPU: one NCCL process (the lent machines have one)."""
    script = tmp_path / "mixed.py"
    script.write_text(MIXED_PRECISION_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run",
                           f"--nproc_per_node={processes}", "--master_addr=127.0.0.1",
                           f"--master_port={free_port()}", str(script), device],
                          env={**env, "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("relative gradient error") == processes


def test_slurm_launch_equals_torchrun(tmp_path):
    """Two processes started as srun starts them (SLURM_* variables, MASTER_ADDR from the
    node list) train the same steps as torchrun's."""
    run(tmp_path, "torchrun", 2)
    script = tmp_path / "train.py"
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR")}
    env.update(OMP_NUM_THREADS="1", SLURM_NTASKS="2", SLURM_JOB_NODELIST="localhost",
               MASTER_PORT=str(free_port()))
    args = [str(tmp_path / "slurm"), str(tmp_path / "cache"), "ddp", "2", str(10**9), "none"]
    procs = [subprocess.Popen([sys.executable, str(script), *args],
                              env={**env, "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for rank in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
    a = (tmp_path / "torchrun" / "metrics.jsonl").read_text().splitlines()
    b = (tmp_path / "slurm" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["loss"] for x in a] == [json.loads(x)["loss"] for x in b]


def test_rank_detection_torchrun_and_slurm():
    assert dist_.detect({}) == dist_.DistEnv()
    env = dist_.detect({"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert (env.rank, env.world, env.local_rank, env.source) == (1, 4, 1, "torchrun")
    slurm = {"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1",
             "SLURM_JOB_NODELIST": "gpu[03-05,7],cpu1", "SLURM_JOB_ID": "1234"}
    env = dist_.detect(slurm)
    assert (env.rank, env.world, env.local_rank, env.source) == (5, 8, 1, "slurm")
    assert dist_.rendezvous_env(env, slurm) == {"MASTER_ADDR": "gpu03",
                                                "MASTER_PORT": str(15000 + 1234)}
    assert dist_.first_node("node7") == "node7"
    with pytest.raises(dist_.DistributedError, match="MASTER_ADDR"):
        dist_.rendezvous_env(env, {})
    with pytest.raises(dist_.DistributedError, match="not divisible"):
        dist_.local_batch(6, 4)
    assert dist_.local_batch(64, 32) == 2


def test_frame_counts_and_warmup():
    draws = [frames_for_step([16, 20, 24], 0, step) for step in range(300)]
    assert draws == [frames_for_step([16, 20, 24], 0, step) for step in range(300)]
    assert set(draws) == {16, 20, 24}
    assert draws != [frames_for_step([16, 20, 24], 1, step) for step in range(300)]  # seeded
    assert all(80 < draws.count(t) < 120 for t in (16, 20, 24))
    assert frames_for_step([8], 3, 5) == 8
    factor = warmup_factor(4)
    assert [factor(s) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert warmup_factor(0)(0) == 1.0


def test_config_from_dict_round_trip():
    from maskgwm.config.resolve import resolve_run_config
    from maskgwm.config.schema import to_dict
    from maskgwm.train.options import config_from_dict, run_hash
    config = resolve_run_config("2", "smoke", "ours", {"mask.ratio": 0.4})
    again = config_from_dict(to_dict(config))
    assert again == config
    assert run_hash(again) == run_hash(config)
    ema = config_from_dict({**to_dict(config), "optim": {**to_dict(config)["optim"],
                                                        "ema_decay": 0.99}})
    assert run_hash(config) != run_hash(ema)


@pytest.mark.parametrize("field, value", [("strategy", "zero"),
                                          ("workers", -1), ("sample_steps", 0),
                                          ("threads", 0)])
def test_bad_train_options_are_named(field, value):
    from maskgwm.train.options import TrainOptions
    with pytest.raises(ValueError, match=f"TrainOptions.{field}"):
        TrainOptions(**{field: value}).check()


GATHER_SCRIPT = textwrap.dedent("""
    import json
    import sys
    import torch
    import torch.distributed as dist
    from maskgwm.model.objective import gather_rows_of_ranks, info_nce
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    out = {}
    for name, counts in (("2-0", [2, 0]), ("1-3", [1, 3])):
        local = torch.arange(counts[rank] * 4, dtype=torch.float32).view(-1, 4) + 100 * rank
        rows, offset = gather_rows_of_ranks(local)
        out[name] = {"rows": rows.tolist(), "offset": offset}
        if len(local):
            out[name]["loss"] = float(info_nce(local + 0.5, rows, 0.2, offset))
    print(json.dumps(out))
    dist.destroy_process_group()
""")


def test_contrastive_negatives_gathered_from_every_rank(tmp_path):
    """mask.contrastive_negatives = "global": every rank's teachers (also none on a rank that
    drew no MR sample) are gathered in rank order, and each student's target is its own row."""
    script = tmp_path / "gather.py"
    script.write_text(GATHER_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                           "--master_addr=127.0.0.1", f"--master_port={free_port()}",
                           "--tee=1", str(script)], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    outputs = [json.loads(line.split("]:", 1)[-1]) for line in done.stdout.splitlines()
               if '"2-0"' in line]
    assert len(outputs) == 2
    ranks = {0: outputs[0], 1: outputs[1]} if outputs[0]["2-0"]["offset"] == 0 else \
        {0: outputs[1], 1: outputs[0]}
    from maskgwm.model.objective import info_nce
    for name, counts in (("2-0", [2, 0]), ("1-3", [1, 3])):
        everyone = torch.cat([torch.arange(c * 4, dtype=torch.float32).view(-1, 4) + 100 * r
                              for r, c in enumerate(counts)])
        for rank in (0, 1):
            got = ranks[rank][name]
            assert got["rows"] == everyone.tolist() and got["offset"] == sum(counts[:rank])
            if counts[rank]:
                mine = everyone[got["offset"]:got["offset"] + counts[rank]]
                expected = info_nce(mine + 0.5, everyone, 0.2, got["offset"])
                assert abs(got["loss"] - float(expected)) < 1e-6
