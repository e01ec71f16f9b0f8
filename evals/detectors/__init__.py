"""Feature detectors for FID and FVD, written from the public sources' facts (no torchvision)."""
from evals.detectors.i3d import InceptionI3d
from evals.detectors.inception import FIDInceptionV3
from evals.detectors.torchscript import TorchScriptI3D, load_torchscript_detector

__all__ = ["FIDInceptionV3", "InceptionI3d", "TorchScriptI3D", "load_torchscript_detector"]
