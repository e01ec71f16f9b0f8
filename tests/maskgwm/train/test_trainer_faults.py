"""Trainer faults at the ci scale: corrupt, partial and unwritable checkpoints, failed sample
videos, non-finite losses, finished runs, preemption at a checkpoint step."""
from __future__ import annotations

import pytest
import torch

from maskgwm.model.model_file import load_model
from maskgwm.train.checkpoint_files import CheckpointMismatchError, list_checkpoints
from maskgwm.train.outputs import OutputDirError
from maskgwm.train.trainer import Trainer


def test_corrupt_newest_checkpoint_falls_back_with_warning(tmp_path, kit):
    cfg = kit.config("1a", "no-mr", **{"stage.steps": 4})
    reference = tmp_path / "reference"
    Trainer(cfg, reference, options=kit.options()).run()
    out = tmp_path / "run"
    first = Trainer(cfg, out, options=kit.options(checkpoint_every=1, keep_last=0))
    first.run(lambda: first.step >= 3)
    folder = out / "checkpoints"
    for step in (2, 3):   # the two newest are corrupt: resume from step 1
        (folder / f"step-{step:08d}.pt").write_bytes(b"not a checkpoint")
    messages = []
    again = Trainer(cfg, out, options=kit.options(keep_last=1), log=messages.append)
    result = again.run(lambda: again.step >= 2)
    assert result["status"] == "interrupted" and result["step"] == 2
    warnings = [m for m in messages if "warning" in m]
    assert len(warnings) == 2 and str(folder / "step-00000003.pt") in warnings[0]
    assert all("renamed it to" in m and "fell back" in m for m in warnings)
    assert any("step-00000001.pt" in m for m in messages)
    # the bad files are kept aside; they neither shadow nor crowd out the new checkpoint
    assert [step for step, _ in list_checkpoints(out)] == [2]
    assert sorted(p.name for p in folder.glob("*.corrupt")) == [
        "step-00000002.pt.corrupt", "step-00000003.pt.corrupt"]
    assert Trainer(cfg, out, options=kit.options()).run()["status"] == "done"
    assert kit.losses(out) == kit.losses(reference)


def test_unwritable_output_directory_fails_at_start(tmp_path, kit):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(OutputDirError, match="output directory .* not writable"):
        Trainer(kit.config("1a", "no-mr"), blocker / "run", options=kit.options())
    with pytest.raises(OutputDirError, match="cache directory .*a-file/cache is not writable"):
        Trainer(kit.config("1a", "no-mr"), tmp_path / "run", options=kit.options(cache=str(blocker / "cache")))


def test_failed_sample_video_is_a_warning_and_training_goes_on(tmp_path, kit):
    """A sample video that cannot be written (here: `samples` is a file) costs no steps: the
    run warns, goes on in training mode and trains as one without samples does."""
    cfg = kit.config(**{"stage.steps": 2})
    Trainer(cfg, tmp_path / "plain", options=kit.options()).run()
    out = tmp_path / "broken"
    out.mkdir()
    (out / "samples").write_text("not a folder")
    said = []
    result = Trainer(cfg, out, options=kit.options(sample_every=1, sample_steps=2),
                     log=said.append).run()
    assert result["status"] == "done"
    warnings = [line for line in said if line.startswith("warning: no sample video")]
    assert len(warnings) == 2 and "step 1" in warnings[0]
    assert kit.losses(out) == kit.losses(tmp_path / "plain")


def test_non_finite_loss_stops_with_an_error_and_keeps_the_good_checkpoints(
        tmp_path, kit, monkeypatch):
    """A NaN loss from step 3 on: an error naming the step, before any update or checkpoint
    of it (before the fix the run finished 'done' with NaN weights, the good checkpoints
    pruned)."""
    from maskgwm.train import trainer as trainer_module
    original, calls = trainer_module.training_loss, []

    def nan_from_step_3(*args, **kwargs):
        terms = original(*args, **kwargs)
        calls.append(1)
        if len(calls) >= 3:
            terms.loss = terms.loss * float("nan")
        return terms
    monkeypatch.setattr(trainer_module, "training_loss", nan_from_step_3)
    cfg = kit.config("1a", "no-mr", **{"stage.steps": 5})
    trainer = Trainer(cfg, tmp_path, options=kit.options(checkpoint_every=1,
                                                     keep_last=2))
    with pytest.raises(trainer_module.TrainingDivergedError,
                       match=r"step 3: loss nan.*step-00000002\.pt"):
        trainer.run()
    assert [step for step, _ in list_checkpoints(tmp_path)] == [2, 1]
    assert not (tmp_path / "model.pt").exists()
    assert sorted(kit.losses(tmp_path)) == [1, 2]
    state = load_model(tmp_path / "checkpoints" / "step-00000002.pt")[0].state_dict()
    assert all(torch.isfinite(v).all() for v in state.values())


def test_resume_deletes_partial_checkpoint_files_of_a_hard_kill(tmp_path, kit):
    """A kill -9 inside a checkpoint write leaves atomic_open's temporary file (as large as a
    checkpoint); the next start deletes it, and nothing else."""
    cfg = kit.config("1a", "no-mr", **{"stage.steps": 3})
    first = Trainer(cfg, tmp_path, options=kit.options())
    first.run(lambda: first.step >= 2)
    folder = tmp_path / "checkpoints"
    (folder / ".step-00000003.pt.k3j_x9.tmp").write_bytes(b"half a checkpoint")
    (folder / "notes.txt").write_text("kept")
    messages = []
    Trainer(cfg, tmp_path, options=kit.options(), log=messages.append).run()
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt", "step-00000002.pt",
                                                      "step-00000003.pt"]
    assert any(".step-00000003.pt.k3j_x9.tmp" in m for m in messages)


def test_finished_run_without_checkpoints_is_not_trained_again(tmp_path, kit):
    """drop_checkpoints_when_done deletes the checkpoints once model.pt is written; starting
    the run again (a requeue) must find it done, not train it again from step 0."""
    cfg = kit.config("1a", "no-mr", **{"stage.steps": 2})
    opts = kit.options(drop_checkpoints_when_done=True)
    assert Trainer(cfg, tmp_path, options=opts).run()["status"] == "done"
    model = (tmp_path / "model.pt").stat().st_mtime_ns
    again = Trainer(cfg, tmp_path, options=opts).run()
    assert again["status"] == "done" and again.get("already_done") and again["step"] == 2
    assert (tmp_path / "model.pt").stat().st_mtime_ns == model
    assert sorted(kit.losses(tmp_path)) == [1, 2] and not list_checkpoints(tmp_path)
    other = kit.config("1a", "no-mr", **{"stage.steps": 3})     # another run in the folder
    with pytest.raises(CheckpointMismatchError, match=r"summary.json .*stage\.steps: 2 -> 3"):
        Trainer(other, tmp_path, options=opts).run()


def test_failed_checkpoint_write_is_a_clear_error_and_keeps_the_older_ones(
        tmp_path, kit, monkeypatch):
    """A full disk inside torch.save (torch says only "unexpected pos"): an error naming the
    file and the free space; no partial file; the checkpoints before it stay readable."""
    from maskgwm.train import checkpoint_files
    cfg = kit.config("1a", "no-mr", **{"stage.steps": 3})
    first = Trainer(cfg, tmp_path, options=kit.options(checkpoint_every=1))
    first.run(lambda: first.step >= 2)

    def disk_full(payload, handle):
        handle.write(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 8 vs 0")
    monkeypatch.setattr(checkpoint_files.torch, "save", disk_full)
    with pytest.raises(checkpoint_files.CheckpointWriteError,
                       match=r"cannot write .*step-00000003\.pt .*GiB free"):
        Trainer(cfg, tmp_path, options=kit.options(checkpoint_every=1)).run()
    monkeypatch.undo()
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "step-00000001.pt", "step-00000002.pt"]
    assert load_model(tmp_path / "checkpoints" / "step-00000002.pt")[2]["step"] == 2
    import maskgwm.train.trainer as trainer_module            # the final model.pt too

    def model_disk_full(path, *args):
        with open(path, "wb") as handle:
            disk_full(None, handle)
    monkeypatch.setattr(trainer_module, "save_model", model_disk_full)
    with pytest.raises(checkpoint_files.CheckpointWriteError,
                       match=r"cannot write .*model\.pt .*GiB free"):
        Trainer(cfg, tmp_path / "final", options=kit.options()).run()


def test_stop_at_a_periodic_checkpoint_writes_it_once(tmp_path, kit):
    """A stop at a step that just got its periodic checkpoint does not write it again (a
    second write can outlast the preemption grace time, and then the job is not requeued)."""
    cfg = kit.config("1a", "no-mr", **{"stage.steps": 4})
    trainer = Trainer(cfg, tmp_path, options=kit.options(checkpoint_every=2))
    writes, save = [], trainer.save_checkpoint
    trainer.save_checkpoint = lambda: writes.append(trainer.step) or save()
    result = trainer.run(lambda: trainer.step >= 2)
    assert result == {"status": "interrupted", "step": 2,
                      "checkpoint": str(tmp_path / "checkpoints" / "step-00000002.pt")}
    assert writes == [2]
