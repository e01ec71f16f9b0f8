"""Datasets: nuScenes, OpenDV-2K and Waymo readers, the synthetic driving world, clip manifests."""
