"""MaskGWM: SD3 DiT with temporal/view blocks and video mask reconstruction (model, training, data)."""
