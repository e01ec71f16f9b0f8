"""Weights manifest, hashes, verification messages, strict official-layout loading."""
from __future__ import annotations

import dataclasses
from collections import OrderedDict

import pytest
import torch

from evals.detectors import FIDInceptionV3, InceptionI3d
from evals.weights import (MANIFEST, WeightsError, check_features, check_weights_dir,
                           git_blob_sha1_file, load_detector, load_official_state_dict,
                           random_detector, save_state_dict_as_official, sha256_file,
                           verify_weights)

HELLO_SHA256 = "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
HELLO_GIT_BLOB = "ce013625030ba8dba906f756967f9e9ca394464a"  # `echo hello | git hash-object --stdin`
EMPTY_GIT_BLOB = "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"


@pytest.fixture(scope="module")
def i3d_file(tmp_path_factory):
    """A randomly initialised I3D saved under the official layout, with its module."""
    torch.manual_seed(0)
    module = InceptionI3d()
    weights_dir = tmp_path_factory.mktemp("weights")
    save_state_dict_as_official(module, weights_dir / "i3d_pretrained_400.pt")
    return weights_dir, module


def pin_hash_to(monkeypatch, name: str, path) -> None:
    """Make the manifest expect `path`'s own hash, as if it were the published file."""
    entry = MANIFEST[name]
    actual = sha256_file(path) if entry.hash_kind == "sha256" else git_blob_sha1_file(path)
    monkeypatch.setitem(MANIFEST, name, dataclasses.replace(entry, published_hash=actual))


def test_manifest_holds_the_published_hashes():
    inception = MANIFEST["inception-2015-12-05"]
    assert inception.file_name == "pt_inception-2015-12-05-6726825d.pth"
    assert inception.hash_kind == "sha256" and inception.published_hash.startswith("6726825d")
    assert inception.size_bytes == 95_628_359
    assert MANIFEST["i3d-400"].published_hash == "a867b87ac3a9097d200598b1d48a1b890d8ec744"
    assert MANIFEST["i3d-torchscript"].published_hash == "93daef59c7ae0e9e8f76225521407e60cbafa6aa"
    for entry in MANIFEST.values():
        assert entry.published_at.startswith("https://") and entry.used_by


def test_hashes_of_known_content(tmp_path):
    (tmp_path / "hello").write_bytes(b"hello\n")
    (tmp_path / "empty").write_bytes(b"")
    assert sha256_file(tmp_path / "hello") == HELLO_SHA256
    assert git_blob_sha1_file(tmp_path / "hello") == HELLO_GIT_BLOB
    assert git_blob_sha1_file(tmp_path / "empty") == EMPTY_GIT_BLOB


def test_missing_file_names_the_file_and_where_to_put_it(tmp_path):
    with pytest.raises(WeightsError) as error:
        verify_weights(tmp_path, "inception-2015-12-05")
    message = str(error.value)
    assert f"put it at {tmp_path / 'pt_inception-2015-12-05-6726825d.pth'}" in message
    assert "https://github.com/mseitzer/pytorch-fid/releases" in message


@pytest.mark.parametrize("name, kind", [("inception-2015-12-05", "sha256"),
                                        ("i3d-400", "git-blob-sha1"),
                                        ("i3d-torchscript", "git-blob-sha1")])
def test_wrong_hash_gives_expected_actual_and_source(tmp_path, name, kind):
    entry = MANIFEST[name]
    path = tmp_path / entry.file_name
    path.write_bytes(b"hello\n")
    with pytest.raises(WeightsError) as error:
        verify_weights(path, name)
    message = str(error.value)
    actual = HELLO_SHA256 if kind == "sha256" else HELLO_GIT_BLOB
    assert f"{kind} expected {entry.published_hash}, actual {actual}" in message
    assert f"put it at {path}" in message and entry.published_at in message


def test_verified_file_returns_its_sha256(tmp_path, monkeypatch):
    path = tmp_path / "i3d_pretrained_400.pt"
    path.write_bytes(b"hello\n")
    pin_hash_to(monkeypatch, "i3d-400", path)
    assert verify_weights(path, "i3d-400") == HELLO_SHA256
    assert verify_weights(tmp_path, "i3d-400") == HELLO_SHA256


def test_check_weights_dir_reports_every_detector(tmp_path):
    (tmp_path / "i3d_pretrained_400.pt").write_bytes(b"hello\n")
    rows = {row.name: row for row in check_weights_dir(tmp_path)}
    assert set(rows) == set(MANIFEST)
    i3d = rows["i3d-400"]
    assert (i3d.present, i3d.size, i3d.actual_hash, i3d.ok) == (True, 6, HELLO_GIT_BLOB, False)
    assert i3d.expected_hash == MANIFEST["i3d-400"].published_hash
    inception = rows["inception-2015-12-05"]
    assert (inception.present, inception.size, inception.actual_hash, inception.ok) == (
        False, None, None, False)


def test_saved_file_has_the_official_layout(i3d_file):
    weights_dir, module = i3d_file
    saved = torch.load(weights_dir / "i3d_pretrained_400.pt", weights_only=True)
    assert type(saved) is OrderedDict
    assert not any(k.endswith("num_batches_tracked") for k in saved)
    assert len(saved) == 287 and "logits.conv3d.bias" in saved


def test_official_layout_loads_into_a_fresh_i3d(i3d_file, monkeypatch):
    weights_dir, module = i3d_file
    pin_hash_to(monkeypatch, "i3d-400", weights_dir / "i3d_pretrained_400.pt")
    loaded = load_detector("i3d-400", weights_dir)
    assert isinstance(loaded, InceptionI3d) and not loaded.training
    for key, value in module.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(value, loaded.state_dict()[key]), key


def test_official_layout_loads_into_a_fresh_inception(tmp_path):
    torch.manual_seed(1)
    module = FIDInceptionV3()
    save_state_dict_as_official(module, tmp_path / "pt_inception-2015-12-05-6726825d.pth")
    loaded = load_detector("inception-2015-12-05", tmp_path, verify=False)
    assert isinstance(loaded, FIDInceptionV3) and not loaded.training
    assert torch.equal(loaded.fc.weight, module.fc.weight)
    assert torch.equal(loaded.Mixed_7c.branch_pool.bn.running_var,
                       module.Mixed_7c.branch_pool.bn.running_var)


def test_load_detector_checks_the_hash_by_default(i3d_file):
    weights_dir, _ = i3d_file
    with pytest.raises(WeightsError, match="git-blob-sha1 expected a867b87a"):
        load_detector("i3d-400", weights_dir)


def official_i3d_state_dict(module) -> OrderedDict:
    return OrderedDict((k, v) for k, v in module.state_dict().items()
                       if not k.endswith("num_batches_tracked"))


def test_renamed_key_names_both_keys(i3d_file):
    state_dict = official_i3d_state_dict(i3d_file[1])
    state_dict["Mixed_5c.b0.conv.weight"] = state_dict.pop("Mixed_5c.b0.conv3d.weight")
    with pytest.raises(WeightsError) as error:
        load_official_state_dict(InceptionI3d(), state_dict, source="renamed.pt")
    message = str(error.value)
    assert "renamed.pt does not fit InceptionI3d" in message
    assert "missing key Mixed_5c.b0.conv3d.weight" in message
    assert "unexpected key Mixed_5c.b0.conv.weight" in message


def test_missing_key_is_named(i3d_file):
    state_dict = official_i3d_state_dict(i3d_file[1])
    del state_dict["logits.conv3d.bias"]
    with pytest.raises(WeightsError, match=r"missing key logits.conv3d.bias \(shape \[400\]\)"):
        load_official_state_dict(InceptionI3d(), state_dict)


def test_wrong_shape_is_named_with_both_shapes(tmp_path, i3d_file):
    state_dict = official_i3d_state_dict(i3d_file[1])
    state_dict["logits.conv3d.weight"] = torch.zeros(600, 1024, 1, 1, 1)
    torch.save(state_dict, tmp_path / "i3d_pretrained_400.pt")
    with pytest.raises(WeightsError) as error:
        load_detector("i3d-400", tmp_path, verify=False)
    message = str(error.value)
    assert str(tmp_path / "i3d_pretrained_400.pt") in message
    assert ("wrong shape for logits.conv3d.weight: file has [600, 1024, 1, 1, 1], "
            "module needs [400, 1024, 1, 1, 1]") in message


def test_num_batches_tracked_in_a_file_is_tolerated(i3d_file):
    state_dict = i3d_file[1].state_dict()
    assert any(k.endswith("num_batches_tracked") for k in state_dict)
    load_official_state_dict(InceptionI3d(), state_dict)


def test_unknown_detector_and_torchscript_random_stand_in_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown detector 'clip'"):
        load_detector("clip", tmp_path)
    with pytest.raises(ValueError, match="no random stand-in for 'i3d-torchscript'"):
        random_detector("i3d-torchscript", 0, torch.zeros(1))


@pytest.mark.parametrize("features, match", [
    (torch.tensor([[1.0, float("nan")], [0.0, 1.0]]), "not finite"),
    (torch.tensor([[1e6, 0.0], [0.0, 1.0]]), "explode"),
    (torch.ones(2, 3), "constant"),
])
def test_degenerate_random_features_are_refused(features, match):
    with pytest.raises(RuntimeError, match=match):
        check_features("i3d-400", features)


def test_large_file_hash_is_remembered_by_size_and_mtime(tmp_path, monkeypatch):
    """cached_sha256: hashed once per (path, size, mtime); a changed file is hashed again; a
    cache that is corrupt or cannot be written costs a hash, never an error."""
    import os

    import evals.weights as weights
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"weights v1")
    cache = weights.sidecar_cache(checkpoint)
    assert cache == tmp_path / "model.pt.sha256.json"
    first = weights.cached_sha256(checkpoint, cache)
    assert first == weights.sha256_file(checkpoint) and cache.is_file()
    real = weights.sha256_file
    calls = []
    monkeypatch.setattr(weights, "sha256_file", lambda path: calls.append(path) or real(path))
    assert weights.cached_sha256(checkpoint, cache) == first and calls == []
    checkpoint.write_bytes(b"weights v2")          # same size: the mtime tells them apart
    os.utime(checkpoint, ns=(1, 10**18))
    second = weights.cached_sha256(checkpoint, cache)
    assert second != first and len(calls) == 1
    cache.write_text("{not json")
    assert weights.cached_sha256(checkpoint, cache) == second and len(calls) == 2
    unwritable = checkpoint / "cache.json"          # under a file: cannot be written
    assert weights.cached_sha256(checkpoint, unwritable) == second and len(calls) == 3
    assert weights.cached_sha256(checkpoint, None) == second and len(calls) == 4
