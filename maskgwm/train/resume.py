"""What a trainer checkpoint holds and how a run resumes from one (`CheckpointState`, a part
of `Trainer`): the resume point rank 0 chooses for every rank, AdamW's state keyed by parameter
name (one format for every strategy and process count), the model (gathered under FSDP), the
EMA weights, RNG states and the data position; written by rank 0, then pruned to the last k.
The file format itself is `checkpoint_files.py`'s.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from maskgwm.model.model_file import model_checkpoint
from maskgwm.train import checkpoint_files as ckpt
from maskgwm.train import distributed as dist_


class CheckpointState:
    """Checkpoint methods of `Trainer` (they use its model, optimizer, options and ranks)."""

    def _resume_point(self) -> dict[str, Any] | None:
        """The newest readable checkpoint, chosen by rank 0 so that every rank resumes from
        the same step; if rank 0 cannot choose (another run's checkpoint) or another rank
        cannot read its choice, every rank stops with an error naming the file (no rank falls
        back on its own, none waits for the others forever)."""
        if not self.env.distributed:
            return ckpt.load_latest(self.out, self.config_hash, self._log,
                                    identity=self.identity)
        data, failure = None, None
        if self.env.is_main:
            try:
                data = ckpt.load_latest(self.out, self.config_hash, self._log,
                                        identity=self.identity)
            except Exception as err:  # noqa: BLE001 - reported below, on every rank
                failure = f"rank 0: {type(err).__name__}: {err}"
        chosen = dist_.broadcast_object(data["path"] if data else None, self.env)
        if chosen is not None and not self.env.is_main:
            try:
                data = ckpt.read_checkpoint(Path(chosen), self.config_hash,
                                            identity=self.identity)
            except Exception as err:  # noqa: BLE001 - reported below, on every rank
                failure = f"rank {self.env.rank}: {type(err).__name__}: {err}"
        failures = [f for f in dist_.gather_objects(failure, self.env) if f]
        if failures:
            raise ckpt.CheckpointMismatchError(
                f"cannot resume from {chosen or self.out} on every rank ({'; '.join(failures)})"
                f": check that every node sees {self.out} alike")
        return data

    def _optimizer_state(self) -> dict[str, Any]:
        """AdamW's state keyed by parameter name, whole and on the CPU (every rank calls it
        under FSDP): one format for every strategy and process count, so any can resume it."""
        from torch.distributed.checkpoint.state_dict import (StateDictOptions,
                                                             get_optimizer_state_dict)
        return get_optimizer_state_dict(self.module, self.optimizer, options=StateDictOptions(
            full_state_dict=True, cpu_offload=True))

    def _restore(self, data: dict[str, Any]) -> None:
        from torch.distributed.checkpoint.state_dict import (StateDictOptions,
                                                             set_optimizer_state_dict)
        try:
            set_optimizer_state_dict(self.module, self.optimizer, data["optimizer"],
                                     options=StateDictOptions(full_state_dict=True))
        except (KeyError, ValueError, RuntimeError) as err:
            raise ckpt.CheckpointMismatchError(
                f"{data['path']}: its optimizer state does not fit this run's trainable "
                f"parameters ({type(err).__name__}: {err}); resume it with the code and "
                f"settings that wrote it") from None
        self.scheduler.load_state_dict(data["scheduler"])
        if self.ema is not None:
            if not data.get("ema"):
                raise ckpt.CheckpointMismatchError(f"{data['path']} has no EMA weights")
            for name, value in data["ema"].items():
                self.ema[name].copy_(dist_.shard_like(value, self.ema[name]))
        ckpt.set_rng_state(data["rng"])

    def _model_state(self) -> dict[str, torch.Tensor]:
        if self.fsdp:
            from torch.distributed.checkpoint.state_dict import (StateDictOptions,
                                                                 get_model_state_dict)
            state = get_model_state_dict(self.module, options=StateDictOptions(
                full_state_dict=True, cpu_offload=True))
            return {k.removeprefix("model."): v for k, v in state.items()}
        return {k: v.detach().cpu() for k, v in self.model.state_dict().items()}

    def _full_ema(self) -> dict[str, torch.Tensor] | None:
        """The EMA weights, whole and on the CPU (under FSDP every rank must call this)."""
        if self.ema is None:
            return None
        return {k: dist_.full(v).detach().cpu() for k, v in self.ema.items()}

    def model_extra(self) -> dict[str, Any]:
        """The "extra" record of the model in a checkpoint and in model.pt."""
        return {"resolution": [self.config.data.width, self.config.data.height],
                "step": self.step, "run_config_hash": self.config_hash,
                "stage": self.config.stage.name, "provenance": self.provenance}

    def _model_payload(self) -> dict[str, Any]:
        extra = self.model_extra()
        if self.fsdp:
            return self._fsdp_payload(extra)
        return model_checkpoint(self.model, self.text, extra)

    def _fsdp_payload(self, extra: dict[str, Any]) -> dict[str, Any]:
        import dataclasses

        from maskgwm.model.model_file import FORMAT
        return {"format": FORMAT, "preset": self.model.preset.name,
                "model_config": dataclasses.asdict(self.model.model_config),
                "mask_config": dataclasses.asdict(self.model.mask_config),
                "action_dim": self.model.action_dim, "state_dict": self._model_state(),
                "text": self.text.state_dict(), "extra": dict(extra)}

    def save_checkpoint(self) -> Path:
        """Write `<out>/checkpoints/step-XXXXXXXX.pt` for the current step (all ranks call;
        rank 0 writes) and prune to the last `keep_last`."""
        self.setup()
        path = ckpt.checkpoint_path(self.out, self.step)
        model = self._model_payload()
        optimizer = self._optimizer_state()
        ema = self._full_ema()
        if self.env.is_main:
            payload = {"model": model, "optimizer": optimizer,
                       "scheduler": self.scheduler.state_dict(), "ema": ema,
                       "rng": ckpt.rng_state(), "step": self.step,
                       "data": {"step": self.step, "epoch": 0,
                                "next_sample": self.step * self.global_batch},
                       "config_hash": self.config_hash, **self.identity}
            ckpt.write_checkpoint(path, payload)
            for old in ckpt.prune(self.out, self.options.keep_last):
                self.log(f"removed old checkpoint {old.name}")
        dist_.barrier(self.env)
        return path
