"""Comparison with Vista's official checkpoint: export our evaluation clips in Vista's manifest
format, run Vista's own `sample.py` per shard in a staging directory, ingest its PNGs under our
clip ids, and score them with this suite's protocols (see README "Comparing with Vista")."""
