"""SD3's VAE (diffusers `AutoencoderKL`, 16 latent channels, 8x downsampling) with SD3's latent
transform latents = (posterior mean - shift_factor) * scaling_factor (docs/DESIGN.md section 1.1).

`SD3VAE.from_pretrained` loads the `vae/` folder of stabilityai/stable-diffusion-3-medium-diffusers
from a local path (nothing is downloaded); `SD3VAE.random` builds a tiny random VAE with the same
interface for tests and smoke runs. `encode` keeps the posterior mean (the training default,
`data.vae_latent = "mean"`, assumed: deterministic, so latents can be cached);
`encode_posterior` also gives the posterior's standard deviation, for training on posterior
samples (`data.vae_latent = "sample"`, as diffusers' SD3 scripts and Vista do).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

SD3_SCALING, SD3_SHIFT = 1.5305, 0.0609
SD3_LATENT_CHANNELS = 16
SD3_VAE_SOURCE = "the vae/ folder of stabilityai/stable-diffusion-3-medium-diffusers"
WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")


def to_latents(mean: torch.Tensor, scaling: float = SD3_SCALING,
               shift: float = SD3_SHIFT) -> torch.Tensor:
    """SD3's transform of the VAE posterior mean: (mean - shift) * scaling."""
    return (mean - shift) * scaling


def from_latents(latents: torch.Tensor, scaling: float = SD3_SCALING,
                 shift: float = SD3_SHIFT) -> torch.Tensor:
    """Inverse of `to_latents`: what the VAE decoder takes."""
    return latents / scaling + shift


def frames_to_unit(frames: torch.Tensor, dtype: torch.dtype, device) -> torch.Tensor:
    """uint8 [N, 3, H, W] -> [-1, 1] on `device` / `dtype`."""
    return frames.to(device=device, dtype=dtype) / 127.5 - 1


def unit_to_frames(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] images -> uint8, rounded and clamped (CPU)."""
    return ((images.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).cpu()


def _config_value(config, name: str, default: float) -> float:
    value = config.get(name) if hasattr(config, "get") else getattr(config, name, None)
    return float(default if value is None else value)


class SD3VAE:
    """An `AutoencoderKL` with SD3's latent transform; frames are uint8 [N, 3, H, W]."""

    def __init__(self, vae, scaling: float | None = None, shift: float | None = None,
                 where: str = "VAE"):
        channels = int(vae.config.latent_channels)
        if channels != SD3_LATENT_CHANNELS:
            raise ValueError(f"{where} has {channels} latent channels, expected "
                             f"{SD3_LATENT_CHANNELS} (SD3's VAE: {SD3_VAE_SOURCE})")
        self.vae = vae.eval().requires_grad_(False)
        self.scaling = _config_value(vae.config, "scaling_factor", SD3_SCALING) \
            if scaling is None else float(scaling)
        self.shift = _config_value(vae.config, "shift_factor", SD3_SHIFT) \
            if shift is None else float(shift)
        self.downsample = 2 ** (len(vae.config.block_out_channels) - 1)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device: str | torch.device = "cpu",
                        dtype: torch.dtype = torch.float32) -> "SD3VAE":
        """Load from the SD3 model root (with a `vae/` sub-folder) or the vae folder itself."""
        from diffusers import AutoencoderKL

        folder = vae_folder(path)
        vae = AutoencoderKL.from_pretrained(str(folder), local_files_only=True,
                                            torch_dtype=dtype)
        return cls(vae.to(device), where=f"SD3 VAE {folder}")

    @classmethod
    def random(cls, seed: int = 0, device: str | torch.device = "cpu") -> "SD3VAE":
        """A tiny random VAE (16 latent channels, 8x downsampling) for tests and smoke runs,
        initialised on the CPU (the same weights on any device) and moved to `device`; its
        frames are meaningless. The global RNG is left untouched."""
        from diffusers import AutoencoderKL

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=16,
                                down_block_types=("DownEncoderBlock2D",) * 4,
                                up_block_types=("UpDecoderBlock2D",) * 4,
                                block_out_channels=(8, 8, 8, 8), layers_per_block=1,
                                norm_num_groups=4, scaling_factor=SD3_SCALING,
                                shift_factor=SD3_SHIFT)
        return cls(vae.to(device))

    # ------------------------------------------------------------------ properties
    @property
    def device(self) -> torch.device:
        return self.vae.device

    @property
    def dtype(self) -> torch.dtype:
        return self.vae.dtype

    def _check_size(self, height: int, width: int, what: str) -> None:
        if height % self.downsample or width % self.downsample:
            raise ValueError(f"{what} {width}x{height}: width and height must be divisible "
                             f"by {self.downsample} (the VAE's downsampling)")

    # ------------------------------------------------------------------ encode / decode
    @torch.no_grad()
    def encode(self, frames: torch.Tensor, batch_size: int = 8) -> torch.Tensor:
        """uint8 [N, 3, H, W] -> float32 latents [N, 16, H/8, W/8] (posterior mean, SD3
        transform), on the VAE's device."""
        return self.encode_posterior(frames, batch_size, with_std=False)[0]

    @torch.no_grad()
    def encode_posterior(self, frames: torch.Tensor, batch_size: int = 8,
                         with_std: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """uint8 [N, 3, H, W] -> (mean, std), float32 [N, 16, H/8, W/8] each, in SD3's latent
        units (the std scaled like the latents), on the VAE's device; std None without
        `with_std`."""
        if frames.dtype != torch.uint8 or frames.dim() != 4 or frames.shape[1] != 3:
            raise ValueError(f"encode takes uint8 frames [N, 3, H, W], got {frames.dtype} "
                             f"{list(frames.shape)}")
        self._check_size(frames.shape[2], frames.shape[3], "frames")
        means, stds = [], []
        for start in range(0, frames.shape[0], batch_size):
            x = frames_to_unit(frames[start:start + batch_size], self.dtype, self.device)
            posterior = self.vae.encode(x).latent_dist
            means.append(to_latents(posterior.mean, self.scaling, self.shift).float())
            if with_std:
                stds.append((posterior.std * self.scaling).float())
        if not means:
            empty = torch.zeros(0, SD3_LATENT_CHANNELS, frames.shape[2] // self.downsample,
                                frames.shape[3] // self.downsample, device=self.device)
            return empty, empty.clone() if with_std else None
        return torch.cat(means), torch.cat(stds) if with_std else None

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, batch_size: int = 8) -> torch.Tensor:
        """Latents [N, 16, h, w] -> uint8 frames [N, 3, 8h, 8w] (on the CPU)."""
        if latents.dim() != 4 or latents.shape[1] != SD3_LATENT_CHANNELS:
            raise ValueError(f"decode takes latents [N, {SD3_LATENT_CHANNELS}, h, w], got "
                             f"{list(latents.shape)}")
        out = []
        for start in range(0, latents.shape[0], batch_size):
            z = latents[start:start + batch_size].to(device=self.device, dtype=self.dtype)
            images = self.vae.decode(from_latents(z, self.scaling, self.shift)).sample
            out.append(unit_to_frames(images))
        if not out:
            h, w = latents.shape[2:]
            return torch.zeros(0, 3, h * self.downsample, w * self.downsample,
                               dtype=torch.uint8)
        return torch.cat(out)


def vae_folder(path: str | os.PathLike) -> Path:
    """The folder holding the VAE's config.json and weights; FileNotFoundError naming the
    missing file and where to get it."""
    root = Path(path)
    hint = f"download {SD3_VAE_SOURCE} and place it at {root}"
    if not root.is_dir():
        raise FileNotFoundError(f"SD3 VAE: {root} is not a directory; {hint}")
    folder = root / "vae" if (root / "vae").is_dir() else root
    config = folder / "config.json"
    if not config.is_file():
        raise FileNotFoundError(f"SD3 VAE: {config} is missing; {hint}")
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        raise FileNotFoundError(f"SD3 VAE: {folder / WEIGHT_FILES[0]} is missing (weights); "
                                f"{hint}")
    return folder
