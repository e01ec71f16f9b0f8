"""The trainer: one stage of one run, from its newest checkpoint (or the start) to stage.steps.

    Trainer(config, out_dir, parent_checkpoint=None, data_root=None, weights_root=None,
            options=None, log=print).run(stop=None) -> dict

Exactness: every random draw is seeded by (seed, global sample index) (objective, data) or
(seed, step) (frame count); sample i of rank r at step s has global index
s * global_batch + r * local_batch + i, so results do not depend on the process count, and a
resumed run repeats an uninterrupted one bit for bit on the CPU. Trainable parameters that a
step leaves unused get zero gradients (as DDP gives them), so AdamW treats them alike on one
process or several. The contrastive term (Table 3a's z_tau row) with `mask.contrastive_negatives
= "local"` is an InfoNCE over the local batch, so it depends on the process count; "global"
gathers every rank's teachers. The EMA of the weights (`optim.ema_decay`, Vista's schedule with
`optim.ema_warmup`) is what model.pt holds. What a checkpoint holds and how a run
resumes: `resume.py`; its files: `checkpoint_files.py`; sample videos and model.pt: `outputs.py`.
"""
from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from evals.atomic import atomic_write_json
from evals.weights import cached_sha256, sidecar_cache
from maskgwm.config.schema import OptimConfig, RunConfig
from maskgwm.model.actions import has_actions
from maskgwm.model.model_file import save_model
from maskgwm.model.dit import MaskGWMDiT
from maskgwm.model.objective import ObjectiveSettings, training_loss
from maskgwm.model.presets import get_preset
from maskgwm.train import checkpoint_files as ckpt
from maskgwm.train import distributed as dist_
from maskgwm.train import modelsetup, outputs
from maskgwm.train.batches import (BatchLatents, TrainingSamples, build_sources, make_batches,
                                make_latent_cache)
from maskgwm.train.metrics import (MetricsWriter, Progress, Timer, device_name, peak_memory,
                                   rates, read_rows)
from maskgwm.train.options import TrainOptions, env_path, run_hash, run_identity
from maskgwm.train.resume import CheckpointState


class LossModule(nn.Module):
    """training_loss as a module, so DDP / FSDP see one forward per step."""

    def __init__(self, model: MaskGWMDiT, settings: ObjectiveSettings, seed: int):
        super().__init__()
        self.model, self.settings, self.seed = model, settings, seed
        self.touch_all = False

    def forward(self, z0, encoder_hidden_states, pooled, sample_index, actions=None):
        terms = training_loss(self.model, z0, encoder_hidden_states, pooled, sample_index,
                              self.seed, self.settings, actions)
        zero = terms.flow.detach() * 0
        branches = torch.tensor([terms.branches.get(k, 0) for k in ("plain", "spatial",
                                                                   "temporal")],
                                dtype=torch.float32, device=z0.device)
        contrastive = terms.contrastive if terms.contrastive is not None else zero
        loss = terms.loss
        if self.touch_all:     # FSDP: every rank reduces the same gradients (zeros if unused)
            trainable = [p.reshape(-1)[0] for p in self.model.parameters() if p.requires_grad]
            loss = loss + 0.0 * torch.stack(trainable).sum()
        return {"loss": loss, "flow": terms.flow, "contrastive": contrastive,
                "branches": branches}


class TrainingDivergedError(RuntimeError):
    """A step whose loss or gradient norm is NaN or infinite."""


def warmup_factor(warmup_steps: int) -> Callable[[int], float]:
    """Linear warm-up over `warmup_steps` steps, then constant: step s uses (s + 1) / warmup."""
    return lambda step: 1.0 if warmup_steps <= 0 else min(1.0, (step + 1) / warmup_steps)


def ema_decay_at(optim: OptimConfig, updates: int) -> float:
    """The EMA decay of update number `updates` (1-based): optim.ema_decay, or with
    optim.ema_warmup Vista's (LitEma's) min(decay, (1 + n) / (10 + n))."""
    if not optim.ema_warmup:
        return optim.ema_decay
    return min(optim.ema_decay, (1 + updates) / (10 + updates))


class Trainer(CheckpointState):
    def __init__(self, config: RunConfig, out_dir: str | Path,
                 parent_checkpoint: str | Path | None = None, data_root: str | Path | None = None,
                 weights_root: str | Path | None = None, options: TrainOptions | None = None,
                 log: Callable[[str], None] = print):
        self.config, self.options = config, options or TrainOptions()
        self.options.check()
        self.out = Path(out_dir)
        self.parent = Path(parent_checkpoint) if parent_checkpoint else None
        self.data_root = env_path(data_root, "REPRO_DATA_ROOT")
        self.weights_root = env_path(weights_root, "REPRO_WEIGHTS")
        self.env = dist_.detect()
        self.global_batch = config.stage.batch_size
        self.local_batch = dist_.local_batch(self.global_batch, self.env.world)
        self.config_hash = run_hash(config)
        self.identity = run_identity(config)
        self._log = log
        outputs.check_writable(self.out, self.env.rank, self.options.cache_root(self.out))
        self.step, self.ready, self.provenance = 0, False, {}
        self.timer = Timer()

    def log(self, message: str) -> None:
        if self.env.is_main:
            self._log(message)

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        """Device, process group, model (or the newest checkpoint), optimizer, data."""
        if self.ready:
            return
        opts, config = self.options, self.config
        if opts.threads:
            torch.set_num_threads(opts.threads)
        self.device = torch.device(opts.device) if opts.device else \
            dist_.default_device(self.env)
        self.owns_group = dist_.init(self.env, self.device)
        resume = self._resume_point()
        if resume is not None:
            model = MaskGWMDiT(config.model, get_preset(config.model.preset), config.mask)
            model.load_state_dict(resume["model"]["state_dict"])
            self.provenance = dict(resume["model"].get("extra", {}).get("provenance", {}))
            self.step = int(resume["step"])
            self.log(f"resuming from {resume['path']} (step {self.step})")
        else:
            model, note = modelsetup.build_model(config, self.parent, self.weights_root,
                                                 self.log)
            self.provenance = {"model": note}
        names = modelsetup.trainable_names(model, config.stage.trainable, config.mask.enabled)
        modelsetup.set_trainable(model, names)
        if opts.activation_checkpointing:
            modelsetup.enable_activation_checkpointing(model)
        if opts.compile:   # kernels kept with the caches: a requeued job (another node) reuses them
            os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR",
                                  str(opts.cache_root(self.out).resolve() / "inductor"))
            self.provenance["compiled_blocks"] = model.compile_blocks()
        self.model = model.to(self.device)
        self.text, text_note = modelsetup.load_text(config.model.preset, self.weights_root,
                                                         config.scale)
        self.vae, vae_note = modelsetup.load_vae(config, self.weights_root, self.device)
        self.provenance.update(text=text_note, vae=vae_note)
        settings = ObjectiveSettings.from_config(config)
        self.module = self._wrap(LossModule(self.model, settings, config.seed))
        self.params = [p for p in self.module.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=config.optim.lr,   # fused: one
                                           weight_decay=config.optim.weight_decay,  # kernel
                                           fused=self.device.type == "cuda")
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, warmup_factor(config.optim.warmup_steps))
        self.ema = None
        if config.optim.ema_decay > 0:      # under FSDP: sharded like the parameters
            self.ema = {n: p.detach().clone() for n, p in self.model.named_parameters()
                        if p.requires_grad}
        if resume is not None:
            self._restore(resume)
        self._setup_data()
        self.ready = True

    def _wrap(self, module: nn.Module) -> nn.Module:
        if not self.env.distributed:
            return module
        module.touch_all = self.options.strategy == "fsdp"
        return dist_.wrap(module, self.options.strategy, self.device, self.compute_dtype)

    @property
    def fsdp(self) -> bool:
        return self.env.distributed and self.options.strategy == "fsdp"

    def _setup_data(self) -> None:
        config, opts = self.config, self.options
        cache_root = opts.cache_root(self.out)
        if self.env.is_main:      # one process writes the synthetic sets, the others wait
            sources = build_sources(config.data, config.seed, self.data_root, cache_root,
                                    self.log)
        dist_.barrier(self.env)
        if not self.env.is_main:
            sources = build_sources(config.data, config.seed, self.data_root, cache_root,
                                    lambda _: None)
        cache = make_latent_cache(self.vae, config.data, sources, cache_root, self.device,
                                  opts.latent_cache, self.log)
        self.samples = TrainingSamples(sources, config.data, config.seed, self.global_batch,
                                       config.stage.steps, cache)
        self.to_latents = BatchLatents(self.vae, self.device,
                                       config.data.vae_latent == "sample", config.seed)
        with_actions = sum(has_actions(c.actions) for s in sources for c in s.manifest.clips)
        total = sum(len(s.manifest.clips) for s in sources)
        without = ("the rest take the dropped-action path" if
                   config.model.missing_actions == "drop" else
                   "the rest get all-zero action features")
        self.provenance["data"] = {
            "source": config.data.source, "roots": [str(s.root) for s in sources],
            "clips": total, "latent_cache": str(cache.root) if cache else None,
            "actions": (None if not config.model.actions else
                        f"{with_actions} of {total} clips carry actions; {without}")}
        if config.model.actions and with_actions < total:
            self.log(f"note: {total - with_actions} of {total} clips have no actions: {without} "
                     f"(model.missing_actions = '{config.model.missing_actions}')")

    # ------------------------------------------------------------------ training
    @property
    def compute_dtype(self) -> torch.dtype | None:
        """bf16 autocast on CUDA; None (fp32 throughout) on the CPU."""
        return torch.bfloat16 if self.device.type == "cuda" else None

    def _autocast(self):
        if self.compute_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.compute_dtype)

    def train_step(self, batch: dict, z0: torch.Tensor) -> dict[str, Any]:
        self.module.train()
        size = z0.shape[0]
        text = self.text.expand(size).to(self.device)
        actions = batch["actions"].to(self.device) if self.config.model.actions else None
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            out = self.module(z0, text.encoder_hidden_states, text.pooled_projections,
                              batch["index"], actions)
        out["loss"].backward()
        if not self.fsdp:
            for p in self.params:        # unused this step: zero, as DDP makes them
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
        clip = self.config.optim.grad_clip if self.config.optim.grad_clip > 0 else float("inf")
        grad_norm = dist_.full(torch.nn.utils.clip_grad_norm_(self.params, clip))
        stats = torch.stack([out["loss"].detach().float(), out["flow"].detach().float(),
                             out["contrastive"].detach().float()])
        stats = dist_.mean_across(stats, self.env)       # the same on every rank
        if not (torch.isfinite(stats).all() and torch.isfinite(grad_norm)):
            newest = ckpt.list_checkpoints(self.out)
            raise TrainingDivergedError(
                f"step {self.step + 1}: loss {float(stats[0])}, grad_norm {float(grad_norm)} "
                f"(not finite); stopped before the update, nothing of it checkpointed (newest "
                f"checkpoint: {newest[0][1] if newest else 'none'}): lower optim.lr or "
                f"optim.grad_clip, or check the data, then resume")
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        if self.ema is not None:
            decay = ema_decay_at(self.config.optim, self.step + 1)
            with torch.no_grad():
                for name, p in self.model.named_parameters():
                    if name in self.ema:
                        self.ema[name].mul_(decay).add_(p.detach(), alpha=1 - decay)
        branches = out["branches"]
        if self.env.distributed:
            branches = dist_.mean_across(branches, self.env) * self.env.world
        return {"loss": float(stats[0]), "flow": float(stats[1]),
                "contrastive": float(stats[2]) if self.config.mask.contrastive else None,
                "lr": lr, "grad_norm": float(grad_norm),
                "branches": dict(zip(("plain", "spatial", "temporal"),
                                     (int(round(float(b))) for b in branches)))}

    def run(self, stop: Callable[[], bool] | None = None) -> dict[str, Any]:
        """Train to stage.steps from the newest checkpoint; see the module docstring."""
        done = self._done_without_checkpoints()
        if done is not None:
            return done
        self.setup()
        total = self.config.stage.steps
        if self.step >= total:
            return self._finish(resumed_done=True)
        if stop is not None and dist_.any_across(bool(stop()), self.env, self.device):
            self.log(f"stop requested before step {self.step + 1}: nothing new to checkpoint")
            newest = ckpt.list_checkpoints(self.out)
            return {"status": "interrupted", "step": self.step,
                    "checkpoint": str(newest[0][1]) if newest else None}
        metrics = MetricsWriter(self.out, self.step) if self.env.is_main else None
        progress = Progress(self.step, total, self.options.log_every, self.log,
                            self.env.is_main)
        batches = iter(make_batches(self.samples, self.step, total, self.env.rank,
                                    self.local_batch, self.options.workers,
                                    pin_memory=self.device.type == "cuda"))
        try:
            while self.step < total:
                started = time.perf_counter()
                batch = next(batches)
                z0 = self.to_latents(batch)
                waited = time.perf_counter() - started
                row = self.train_step(batch, z0)
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                elapsed = time.perf_counter() - started
                self.step += 1
                self.timer.add(elapsed, waited, self.global_batch)
                row = {"step": self.step, **row, "frames": int(z0.shape[1]),
                       "samples_per_s": self.global_batch / elapsed, "step_s": elapsed,
                       "data_wait_s": waited}
                if metrics is not None:
                    metrics.add(row)
                progress.update(row, total)
                every = self.options.sample_every
                if every and self.step % every == 0:
                    self.write_sample()
                saved = None
                if self.step < total and self.options.checkpoint_every and \
                        self.step % self.options.checkpoint_every == 0:
                    saved = self.save_checkpoint()
                wants = stop() if stop is not None else False
                if dist_.any_across(bool(wants), self.env, self.device) and self.step < total:
                    path = saved or self.save_checkpoint()   # not twice in the grace time
                    self.log(f"stopped at step {self.step}; checkpoint {path}")
                    return {"status": "interrupted", "step": self.step,
                            "checkpoint": str(path)}
        finally:
            progress.close()
            del batches
        if not self.options.drop_checkpoints_when_done:
            self.save_checkpoint()
        return self._finish()

    # ------------------------------------------------------------------ outputs
    def write_sample(self) -> Path | None:
        """A sample video of the first clip under <out>/samples/step-N (outputs.py), written by
        rank 0; every rank calls (under FSDP the parameters are gathered for it). A failure is
        a warning: a sample video is a log, not worth the steps since the last checkpoint."""
        if self.fsdp:
            self.module.unshard()
        try:
            return outputs.write_sample(self) if self.env.is_main else None
        except Exception as err:  # noqa: BLE001 - any failure of the log output
            self.log(f"warning: no sample video at step {self.step} ({type(err).__name__}: "
                     f"{err}); training goes on")
            return None
        finally:
            if self.fsdp:
                self.module.reshard()
            dist_.barrier(self.env)

    def _done_without_checkpoints(self) -> dict[str, Any] | None:
        """The result of this run if it finished and dropped its checkpoints
        (drop_checkpoints_when_done): then only summary.json and model.pt say it is done."""
        model_path, summary_path = self.out / "model.pt", self.out / "summary.json"
        if ckpt.list_checkpoints(self.out) or not (model_path.is_file() and
                                                   summary_path.is_file()):
            return None
        summary = read_summary(self.out)
        if summary.get("config_hash") != self.config_hash:
            raise ckpt.CheckpointMismatchError(ckpt.mismatch_message(
                summary_path, summary.get("config_hash"), self.config_hash, summary,
                self.identity))
        return self._already_done(summary["step"])

    def _already_done(self, step: int) -> dict[str, Any]:
        model_path, summary_path = self.out / "model.pt", self.out / "summary.json"
        self.log(f"run already complete at step {step}: {model_path}")
        return {"status": "done", "step": step, "model": str(model_path),
                "summary": str(summary_path), "already_done": True}

    def _finish(self, resumed_done: bool = False) -> dict[str, Any]:
        model_path, summary_path = self.out / "model.pt", self.out / "summary.json"
        if resumed_done and model_path.is_file() and summary_path.is_file():
            return self._already_done(self.step)
        state = self._model_state() if self.fsdp else None
        ema = self._full_ema()
        if self.env.is_main:
            extra = {**self.model_extra(), "ema_decay": self.config.optim.ema_decay or None}
            with outputs.export_weights(self, state, ema), ckpt.naming_write(model_path):
                save_model(model_path, self.model, self.text, extra)
            summary = {"status": "done", "step": self.step, "stage": self.config.stage.name,
                       "scale": self.config.scale, "config_hash": self.config_hash,
                       "world_size": self.env.world, "device": str(self.device),
                       "device_name": device_name(self.device),
                       "strategy": self.options.strategy if self.env.distributed else "single",
                       "activation_checkpointing": self.options.activation_checkpointing,
                       "global_batch": self.global_batch, "local_batch": self.local_batch,
                       **rates(read_rows(self.out, self.step), self.global_batch),
                       "steps_run": self.timer.steps, **peak_memory(self.device),
                       "provenance": self.provenance, "model": str(model_path),
                       "model_sha256": cached_sha256(model_path, sidecar_cache(model_path)),
                       **self.identity}
            atomic_write_json(summary_path, summary)
            self.log(f"done: step {self.step}, {summary['steps_per_s']:.3f} steps/s, "
                     f"model {model_path}")
            if self.options.drop_checkpoints_when_done:
                for _, path in ckpt.list_checkpoints(self.out):
                    path.unlink()
        dist_.barrier(self.env)
        return {"status": "done", "step": self.step, "model": str(model_path),
                "summary": str(summary_path), **self.timer.summary()}


def read_summary(out_dir: str | Path) -> dict[str, Any]:
    return json.loads((Path(out_dir) / "summary.json").read_text())
