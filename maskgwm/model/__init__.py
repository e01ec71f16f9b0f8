"""The MaskGWM model and its training-time parts (token masks, attention variants, flow)."""
