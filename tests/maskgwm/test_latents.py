"""Latent caching with a real (tiny, random) diffusers AutoencoderKL."""
from __future__ import annotations

import copy
import dataclasses
import os

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL
from PIL import Image

from maskgwm.config.schema import DataConfig
from maskgwm.data.latents import LatentCache, frames_stamp, sd3_vae_encoder, vae_encoder_id
from maskgwm.data.loader import ClipDataset, Source, read_image_file
from maskgwm.data.manifest import ClipManifest, ClipRecord
from maskgwm.train.batches import BatchLatents, TrainingSamples, collate, make_latent_cache


@pytest.fixture(scope="module")
def vae():
    torch.manual_seed(0)
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=16,
                         down_block_types=("DownEncoderBlock2D",) * 2,
                         up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16),
                         layers_per_block=1, norm_num_groups=4).eval()


@pytest.fixture
def source(tmp_path):
    refs = []
    for t in range(6):
        ref = f"c0/{t}.png"
        (tmp_path / "c0").mkdir(exist_ok=True)
        Image.fromarray(np.full((16, 32, 3), 30 * t, np.uint8)).save(tmp_path / ref)
        refs.append([ref])
    clip = ClipRecord("c0", "synthetic", "train", "s", ["CAM_FRONT"], refs,
                      list(range(6)), 10.0)
    return Source(ClipManifest("synthetic", str(tmp_path), [clip]), tmp_path)


def test_cache_hit_equals_miss_and_skips_decoding(vae, source, tmp_path):
    cache = LatentCache(tmp_path / "cache", vae_encoder_id(vae, 1.5305, 0.0609),
                        sd3_vae_encoder(vae))
    dataset = ClipDataset([source], n_frames=4, width=32, height=16, length=3, seed=0,
                          latent_cache=cache)
    first = dataset[0]
    assert "frames" not in first and first["latents"].shape == (4, 1, 16, 8, 16)
    reads = []
    counting = dataclasses.replace(
        source, read_frame=lambda root, ref: reads.append(ref) or read_image_file(root, ref))
    again = ClipDataset([counting], 4, 32, 16, length=3, seed=0, latent_cache=cache)[0]
    assert reads == [] and torch.equal(first["latents"], again["latents"])


def test_encoder_id_changes_with_weights_and_transform(vae):
    base = vae_encoder_id(vae, 1.5305, 0.0609)
    assert base == vae_encoder_id(vae, 1.5305, 0.0609)
    assert base != vae_encoder_id(vae, 1.0, 0.0)
    with torch.no_grad():
        vae.encoder.conv_in.weight[0, 0, 0, 0] += 1.0
    assert base != vae_encoder_id(vae, 1.5305, 0.0609)


DAMAGE = {"empty": lambda path: path.write_bytes(b""),
          "truncated": lambda path: path.write_bytes(path.read_bytes()[:100]),
          "nan": lambda path: np.save(path, np.full((4, 1, 16, 2, 4), np.nan, np.float16)),
          "inf": lambda path: np.save(path, np.full((4, 1, 16, 2, 4), np.inf, np.float16)),
          "shape": lambda path: np.save(path, np.zeros((3, 1, 16, 2, 4), np.float16)),
          "flat": lambda path: np.save(path, np.zeros(7, np.float16)),
          "ints": lambda path: np.save(path, np.zeros((4, 1, 16, 2, 4), np.int16))}


@pytest.mark.parametrize("damage", DAMAGE)
def test_bad_entry_is_re_encoded_and_overwritten(damage, source, tmp_path):
    cache = LatentCache(tmp_path / "cache", "enc", mean_encoder)
    dataset = ClipDataset([source], 4, 32, 16, length=1, seed=0, latent_cache=cache)
    first = dataset[0]["latents"]
    path = next((tmp_path / "cache" / "enc").rglob("*.npy"))
    DAMAGE[damage](path)
    assert torch.equal(dataset[0]["latents"], first)
    assert np.array_equal(np.load(path), first.numpy().astype(np.float16))


def test_non_finite_latents_are_not_cached(source, tmp_path):
    huge = LatentCache(tmp_path / "cache", "enc", lambda x: mean_encoder(x) * 1e4)
    dataset = ClipDataset([source], 4, 32, 16, length=1, seed=0, latent_cache=huge)
    with pytest.raises(ValueError, match=r"c0/.*\.npy: .*non-finite.*float16"):
        dataset[0]
    assert not list((tmp_path / "cache").rglob("*.npy"))


def test_damaged_entry_is_re_encoded(vae, source, tmp_path):
    cache = LatentCache(tmp_path / "cache", "vae", sd3_vae_encoder(vae))
    dataset = ClipDataset([source], 4, 32, 16, length=1, seed=0, latent_cache=cache)
    first = dataset[0]["latents"]
    path = next((tmp_path / "cache" / "vae").rglob("*.npy"))
    path.write_bytes(b"garbage")
    assert torch.equal(dataset[0]["latents"], first)


def mean_encoder(frames: torch.Tensor) -> torch.Tensor:
    """A stand-in encoder: each frame's mean value, broadcast to [N, 16, 2, 4]."""
    return frames.float().mean(dim=(1, 2, 3), keepdim=True).expand(-1, 16, 2, 4).clone()


def replace_frames(source, value: int) -> None:
    """Rewrite every frame of the fixture's clip (as a re-extraction would), newer mtime."""
    for views in source.manifest.clips[0].frames:
        path = source.root / views[0]
        mtime = path.stat().st_mtime_ns
        Image.fromarray(np.full((16, 32, 3), value, np.uint8)).save(path)
        os.utime(path, ns=(mtime + 10**9, mtime + 10**9))


def test_replaced_source_frames_are_re_encoded(source, tmp_path):
    cache = LatentCache(tmp_path / "cache", "enc", mean_encoder, dtype=np.float32)
    dataset = ClipDataset([source], 4, 32, 16, length=1, seed=0, latent_cache=cache)
    assert (dataset[0]["latents"] != 200).any()
    replace_frames(source, 200)
    assert (dataset[0]["latents"] == 200).all()


def test_training_samples_re_encode_replaced_frames(source, tmp_path):
    cache = LatentCache(tmp_path / "cache", "enc", mean_encoder, dtype=np.float32)
    samples = TrainingSamples([source], DataConfig(width=32, height=16, frames=[4]), seed=0,
                              global_batch=1, steps=1, latent_cache=cache)
    assert samples[0]["latents"].shape == (4, 1, 16, 2, 4)
    assert (samples[0]["latents"] != 200).any()
    replace_frames(source, 200)
    assert (samples[0]["latents"] == 200).all()


def test_frames_stamp_follows_container_files(tmp_path):
    (tmp_path / "seg.parquet").write_bytes(b"a")
    refs = [["seg.parquet#1"], ["seg.parquet#2"]]
    before = frames_stamp(tmp_path, refs)
    assert frames_stamp(tmp_path, refs) == before
    (tmp_path / "seg.parquet").write_bytes(b"bb")    # rewritten: new size
    assert frames_stamp(tmp_path, refs) != before


def test_cache_key_changes_with_resolution(source, tmp_path):
    """Latents of the same clip at another frame size are another entry, not a stale hit."""
    cache = LatentCache(tmp_path / "cache", "enc",
                        lambda x: torch.nn.functional.avg_pool2d(x.float(), 8), np.float32)
    small = ClipDataset([source], 4, 32, 16, length=1, seed=0, latent_cache=cache)[0]
    large = ClipDataset([source], 4, 64, 32, length=1, seed=0, latent_cache=cache)[0]
    assert small["latents"].shape == (4, 1, 3, 2, 4)
    assert large["latents"].shape == (4, 1, 3, 4, 8)
    again = ClipDataset([source], 4, 32, 16, length=1, seed=0, latent_cache=cache)[0]
    assert torch.equal(again["latents"], small["latents"])


def test_encoder_id_changes_with_weight_dtype(vae):
    """A VAE run in bfloat16 encodes other latents than the same weights in float32."""
    rounded = copy.deepcopy(vae).to(torch.bfloat16).float()   # bf16 values, held in float32
    low = copy.deepcopy(rounded).to(torch.bfloat16)
    frames = torch.randint(0, 256, (1, 3, 16, 32), dtype=torch.uint8)
    assert not torch.equal(sd3_vae_encoder(rounded)(frames), sd3_vae_encoder(low)(frames))
    assert vae_encoder_id(rounded, 1.5305, 0.0609) != vae_encoder_id(low, 1.5305, 0.0609)


def test_entry_of_another_storage_dtype_is_re_encoded(source, tmp_path):
    """A float32 cache does not serve float16-rounded latents left by a float16 one."""
    def encoder(frames):
        return mean_encoder(frames) / 7.0              # not exact in float16
    ClipDataset([source], 4, 32, 16, length=1, seed=0,
                latent_cache=LatentCache(tmp_path / "cache", "enc", encoder, np.float16))[0]
    exact = LatentCache(tmp_path / "cache", "enc", encoder, np.float32)
    item = ClipDataset([source], 4, 32, 16, length=1, seed=0, latent_cache=exact)[0]
    refs = source.manifest.clips[0].frames[item["start"]:item["start"] + 4]
    frames = torch.from_numpy(np.stack([np.asarray(Image.open(tmp_path / ref[0]))
                                        for ref in refs])).permute(0, 3, 1, 2)
    assert torch.equal(item["latents"][:, 0], encoder(frames))


def test_posterior_samples_are_seeded_per_sample_and_never_cached(source, tmp_path):
    """data.vae_latent = "sample": z0 = mean + std * noise, the noise seeded by (seed, sample
    index), so a sample's latents do not depend on its batch; the CPU latent cache (posterior
    means) is not used for such runs."""
    from maskgwm.model.vae import SD3VAE
    vae = SD3VAE.random(seed=0)
    data = DataConfig(width=32, height=16, frames=[4], vae_latent="sample")
    samples = TrainingSamples([source], data, seed=0, global_batch=2, steps=1)
    items = [samples[0], samples[1]]
    both = collate(items)
    sampled = BatchLatents(vae, torch.device("cpu"), sample_posterior=True, seed=3)
    mean = BatchLatents(vae, torch.device("cpu"))(both)
    z = sampled(both)
    assert z.shape == mean.shape and not torch.allclose(z, mean)
    torch.testing.assert_close(sampled(collate(items[1:])), z[1:], rtol=0, atol=1e-6)
    assert not torch.equal(BatchLatents(vae, torch.device("cpu"), True, seed=4)(both), z)
    notes = []
    assert make_latent_cache(vae, data, [source], tmp_path, torch.device("cpu"), True,
                             notes.append) is None
    assert "posterior means" in notes[0]
    assert make_latent_cache(vae, dataclasses.replace(data, vae_latent="mean"), [source],
                             tmp_path, torch.device("cpu"), True, notes.append) is not None
