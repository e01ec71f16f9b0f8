"""Named evaluation protocols (docs/DESIGN.md sections 4 and 9): every choice that moves FID or FVD
is an explicit field, and every result embeds the full protocol and its hash.

Fields the papers leave open carry our reading (docs/DESIGN.md section 9) and are listed in
`ASSUMED`, so docs and results can say which numbers rest on an assumption. Each FVD detector
names its flavour (`FVD_FLAVOURS`: i3d-400 gives TATS-FVD, not the original TF FVD), and
`PAPER_FVD_NOTE` says which flavour the paper's numbers most likely are.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

SCHEMA_VERSION = 1
BOOTSTRAP_UNITS = ("clip", "scene")
# Fields added after a protocol's hash was in use: left out of to_dict (and so of the hash)
# at their default, so protocols that do not set them keep their hash and cached features.
ADDED_DEFAULTS = {("bootstrap", "unit"): "clip"}
RESIZE_CHOICES = ("tf_bilinear", "torch_bilinear")
CROP_CHOICES = ("none", "center")
FID_DETECTORS = ("inception-2015-12-05",)


@dataclass(frozen=True)
class FVDFlavour:
    """Which FVD a detector gives (docs/DESIGN.md section 4.5): `tag` labels the metric, `name` goes
    into every result and table footnote, `note` says how it differs from the original FVD."""
    tag: str
    name: str
    note: str


ORIGINAL_FVD = ("the original TF FVD (Unterthiner et al.: TF-Hub i3d-kinetics-400, TF-GAN "
                "distance)")
FVD_FLAVOURS = {
    "i3d-400": FVDFlavour(
        "TATS-FVD", "TATS-FVD (I3D port, BatchNorm eps 1e-5; covariance /(N-1))",
        "TATS-FVD: TATS/LVDM/VideoGPT's InceptionI3d with i3d_pretrained_400.pt uses BatchNorm "
        "eps 1e-5 where the original FVD's sonnet I3D (and piergiaj's port) uses 1e-3 (12.7% of "
        f"the logits differ at random weights), so it is not {ORIGINAL_FVD}. Covariances "
        "divide by N-1, as TATS and pytorch-fid do; TATS computes the distance in float32 with "
        "an SVD square root, we in float64."),
    "i3d-torchscript": FVDFlavour(
        "FVD (StyleGAN-V I3D)",
        "StyleGAN-V FVD features (TorchScript I3D); our covariance /(N-1), StyleGAN-V's /N",
        "StyleGAN-V FVD features: StyleGAN-V's i3d_torchscript.pt called as its FVD calls it; "
        "StyleGAN-V divides the covariance by N, we by N-1 (about 0.05% of the distance at "
        "N = 2048)."),
}
FVD_DETECTORS = tuple(FVD_FLAVOURS)
PAPER_FVD_DETECTOR = "i3d-400"     # the flavour the paper's (and Vista's) FVD most likely is
PAPER_FVD_NOTE = (
    "The paper's FVD (and Vista's) is most likely TATS-FVD: MaskGWM follows Vista's protocol, "
    "and Vista says its FVD is \"modified from LVDM\" with i3d_pretrained_400.pt (LVDM's FVD "
    "uses the TATS-style I3D port). This is uncertain: Vista never released its evaluation "
    "code (Vista issues #9 and #60 are open) and LVDM's repository also ships other FVD "
    "variants, so the paper's numbers may be another flavour (e.g. StyleGAN-V's or the "
    "original TF FVD). Numbers the paper quotes from other works come from those works' own "
    "FVD code.")


def fvd_flavour(detector: str) -> FVDFlavour:
    """The FVD flavour of an FVD detector name (FVD_DETECTORS)."""
    try:
        return FVD_FLAVOURS[detector]
    except KeyError:
        raise ValueError(f"unknown FVD detector '{detector}' (known: "
                         f"{', '.join(FVD_FLAVOURS)})") from None


def flavour_record(detector: str) -> dict[str, str]:
    """What a result records of its FVD: detector, tag, name, note."""
    return {"detector": detector, **dataclasses.asdict(fvd_flavour(detector))}


def result_fvd_flavour(result: dict[str, Any]) -> dict[str, str]:
    """A result's FVD flavour; results written before flavours were recorded get it from the
    protocol they embed."""
    return result.get("fvd_flavour") or flavour_record(result["protocol"]["fvd"]["detector"])


@dataclass(frozen=True)
class FIDSpec:
    detector: str = "inception-2015-12-05"
    resize: str = "tf_bilinear"          # torchmetrics / torch-fidelity's TF1-style resize
    size: int = 299
    crop: str = "none"                   # none (aspect ignored) | center (square, then resize)
    exclude_cond_frames: bool = True     # condition frames are copies of real frames
    frames_per_clip: int = 0             # 0: every (counted) frame; k: k random frames per clip


@dataclass(frozen=True)
class FVDSpec:
    detector: str = "i3d-400"            # TATS/LVDM/Vista-style I3D: TATS-FVD (FVD_FLAVOURS)
    resize: str = "torch_bilinear"       # per frame to size x size, aspect ignored (TATS/LVDM)
    size: int = 224
    crop: str = "none"                   # none | center (square, as VideoGPT)
    first_frame: int = 0                 # frames [first_frame, first_frame + num_frames)
    num_frames: int = 0                  # 0: all frames from first_frame
    min_frames: int = 10                 # the I3D needs >= 9 frames; shorter clips are padded
    pad: str = "repeat_last"             # how short clips are padded up to min_frames


@dataclass(frozen=True)
class KIDSpec:
    subset_size: int = 1000
    subsets: int = 100


@dataclass(frozen=True)
class BootstrapSpec:
    n_boot: int = 200                    # 0: no intervals
    level: float = 0.95
    blocks: int = 20                     # resampled blocks (frames of one clip share one); each
                                         # FeatureStats holds blocks x d^2 float64 (671 MB at 2048)
    unit: str = "clip"                   # what shares a block: a clip, or a scene (every view
                                         # `<scene>/<view>` of it; multi-view, evals/multiview.py)


@dataclass(frozen=True)
class LongHorizonSpec:
    window: int = 25                     # frames generated per rollout round
    cond_frames: int = 3                 # frames carried into the next round
    horizon_s: float = 15.0
    frames_per_point: int = 25           # frames drawn (in time order) at each point


@dataclass(frozen=True)
class Protocol:
    name: str
    description: str
    dataset: str
    split: str
    n_clips: int                         # clips generated and scored (FVD videos)
    frames_per_clip: int
    fps: float
    cond_frames: int
    actions: bool = False
    width: int = 512                     # generated and reference frames are compared here;
    height: int = 288                    # reference frames: centre crop to aspect + LANCZOS
    n_fid_frames_paper: int = 0          # the paper's FID frame count (ours is reported as n)
    fid: FIDSpec = field(default_factory=FIDSpec)
    fvd: FVDSpec = field(default_factory=FVDSpec)
    kid: KIDSpec = field(default_factory=KIDSpec)
    bootstrap: BootstrapSpec = field(default_factory=BootstrapSpec)
    long_horizon: LongHorizonSpec | None = None
    seed: int = 0                        # random frame draws (FID subsets, long-horizon points)
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for (section, key), default in ADDED_DEFAULTS.items():
            if data[section][key] == default:
                del data[section][key]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Protocol":
        """The protocol `to_dict` gave (a bundle's or result's); fields left out take their
        defaults."""
        sections = {"fid": FIDSpec, "fvd": FVDSpec, "kid": KIDSpec, "bootstrap": BootstrapSpec,
                    "long_horizon": LongHorizonSpec}
        return cls(**{key: sections[key](**value) if key in sections and value is not None
                      else value for key, value in data.items()})

    @property
    def hash(self) -> str:
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def fvd_flavour(self) -> FVDFlavour:
        """Which FVD this protocol's numbers are (a property: not hashed)."""
        return fvd_flavour(self.fvd.detector)

    def measurement_points(self) -> list[tuple[int, float]]:
        """(frames generated so far, seconds) after each rollout round; one point otherwise."""
        if self.long_horizon is None:
            return [(self.frames_per_clip, self.frames_per_clip / self.fps)]
        spec, points, frames = self.long_horizon, [], self.long_horizon.window
        if spec.window <= spec.cond_frames:
            raise ValueError(f"protocol {self.name}: long_horizon.window ({spec.window}) must "
                             f"exceed long_horizon.cond_frames ({spec.cond_frames}), or no "
                             "round adds frames")
        while True:
            points.append((frames, frames / self.fps))
            if frames / self.fps >= spec.horizon_s:
                return points
            frames += spec.window - spec.cond_frames

    def replace(self, **changes: Any) -> "Protocol":
        """A variant of this protocol (sensitivity studies, smaller scales); nested specs
        change with dotted names, e.g. replace(**{"fvd.num_frames": 16})."""
        flat = {k: v for k, v in changes.items() if "." not in k}
        nested: dict[str, dict[str, Any]] = {}
        for key, value in changes.items():
            if "." in key:
                outer, inner = key.split(".", 1)
                nested.setdefault(outer, {})[inner] = value
        for outer, inner in nested.items():
            current = getattr(self, outer)
            if current is None:
                raise ValueError(f"protocol {self.name} has no '{outer}' section")
            flat[outer] = dataclasses.replace(current, **inner)
        return dataclasses.replace(self, **flat)

    def validate(self) -> None:
        problems = []
        if self.fid.resize not in RESIZE_CHOICES or self.fvd.resize not in RESIZE_CHOICES:
            problems.append(f"resize must be one of {RESIZE_CHOICES}")
        if self.fid.detector not in FID_DETECTORS:
            problems.append(f"fid.detector must be one of {FID_DETECTORS}")
        if self.fvd.detector not in FVD_DETECTORS:
            problems.append(f"fvd.detector must be one of {FVD_DETECTORS}")
        if self.fid.crop not in CROP_CHOICES or self.fvd.crop not in CROP_CHOICES:
            problems.append(f"crop must be one of {CROP_CHOICES}")
        if self.fvd.pad not in ("repeat_last", "none"):
            problems.append("fvd.pad must be repeat_last or none")
        if not 0 <= self.cond_frames < self.frames_per_clip:
            problems.append("need 0 <= cond_frames < frames_per_clip")
        scored = self.frames_per_clip if self.long_horizon is None else min(
            self.long_horizon.frames_per_point, self.measurement_points()[0][0])
        first, count = self.fvd.first_frame, self.fvd.num_frames
        if first < 0 or count < 0 or first + max(count, 1) > scored:
            problems.append(f"fvd frames from {first} ({count or 'all'}) do not fit the "
                            f"{scored} frames scored per clip")
        if self.bootstrap.unit not in BOOTSTRAP_UNITS:
            problems.append(f"bootstrap.unit must be one of {BOOTSTRAP_UNITS}")
        if self.n_clips < 2:
            problems.append("n_clips must be at least 2")
        if problems:
            raise ValueError(f"protocol {self.name}: " + "; ".join(problems))


ASSUMED = {
    "vista_nuscenes": ["fvd.num_frames (all 25 frames)", "fvd.resize", "fid.resize"],
    "drivewm_mview": ["fid: all 7,200 frames instead of 10K", "fvd.min_frames 10 (OpenDWM)",
                      "cond_frames 1"],
    "waymo_zeroshot": ["fid.exclude_cond_frames false (15K = 600 x 25)", "fvd.resize"],
    "opendv_ablation": ["fid.frames_per_clip 6 (18,000 / 3,000)", "cond_frames 1"],
    "opendv_long": ["one measurement point per rollout round",
                    "points draw from the whole sequence, condition frames included"],
}

PROTOCOLS: dict[str, Protocol] = {p.name: p for p in (
    Protocol("vista_nuscenes", "Vista's nuScenes protocol: 5369 val clips x 25 CAM_FRONT frames, "
             "1 condition frame, no action; FID on the 24 generated frames of each clip",
             "nuscenes", "val", 5369, 25, 10.0, 1, n_fid_frames_paper=5369 * 24),
    Protocol("drivewm_mview", "Drive-WM multi-view: 150 val scenes x 6 views = 900 videos of "
             "8 keyframes; FID on all their frames", "nuscenes_mview", "val", 900, 8, 2.0, 1,
             n_fid_frames_paper=10000, fid=FIDSpec(exclude_cond_frames=False),
             bootstrap=BootstrapSpec(unit="scene")),     # a scene's 6 views are one unit
    Protocol("waymo_zeroshot", "600 Waymo val front-camera videos, zero-shot, 1 condition "
             "frame, no action; FID on 15K frames", "waymo", "validation", 600, 25, 10.0, 1,
             n_fid_frames_paper=15000, fid=FIDSpec(exclude_cond_frames=False)),
    Protocol("opendv_ablation", "OpenDV-2K val (GenAD setting): 3000 clips for FVD, 6 random "
             "generated frames per clip (18,000) for FID", "opendv", "val", 3000, 25, 10.0, 1,
             n_fid_frames_paper=18000, fid=FIDSpec(frames_per_clip=6)),
    Protocol("opendv_long", "300 OpenDV-2K val videos, 3 condition frames, no action, "
             "autoregressive rollout to 15 s; 25 frames drawn per measurement point",
             "opendv", "val", 300, 25, 10.0, 3, n_fid_frames_paper=300 * 25,
             fid=FIDSpec(exclude_cond_frames=False), long_horizon=LongHorizonSpec()),
)}


class UnknownProtocol(ValueError):
    pass


def get_protocol(name: str) -> Protocol:
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise UnknownProtocol(f"unknown protocol '{name}' (known: {', '.join(PROTOCOLS)})") from None
