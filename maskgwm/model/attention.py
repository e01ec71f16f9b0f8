"""One attention entry point with a selectable kernel: torch SDPA or FlashAttention.

    attention(q, k, v, attn_mask=None, backend=None)   # q, k, v: [N, heads, L, d]

Backends (`set_backend(name)`, `get_backend()`, or the environment variable MASKGWM_ATTENTION,
read when no backend was set in code):
  "sdpa"   torch.nn.functional.scaled_dot_product_attention (any device and dtype, any mask).
  "flash"  flash_attn.flash_attn_func (package `flash-attn`): CUDA tensors in float16/bfloat16,
           no attention mask. Asking for it where it cannot run is an error saying why.
  "auto"   flash when flash_attn imports, the tensors are CUDA float16/bfloat16 and no mask
           is given; sdpa otherwise (so on CPU, in float32 or with a mask: sdpa).
The default is "sdpa" (which dispatches to FlashAttention kernels on GPUs itself): flash-attn
and "auto" are opt-in, since the flash path has not yet passed its CUDA test on a lent GPU.

Why no varlen kernel: the row-wise temporal mask keeps exactly round((1 - r) W) tokens in every
row of every frame, so packing the visible tokens row by row (masks.gather_rows) gives
fixed-length sequences [B H Wk, heads, T, d]. Shifted temporal attention therefore runs as one
dense, unmasked batched call: flash_attn_func suffices, flash_attn_varlen_func is not needed.
Only the masked baseline (independent per-frame masks) needs an attn_mask, and it stays on sdpa.

flash_attn is imported lazily, once, on the first call that might use it.
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F

BACKENDS = ("auto", "sdpa", "flash")
ENV_VAR = "MASKGWM_ATTENTION"
FLASH_DTYPES = (torch.float16, torch.bfloat16)

_backend: str | None = None          # set in code; None: the env var, else "sdpa"
_flash_func = None                   # flash_attn.flash_attn_func once imported
_flash_error: str | None = None      # why the import failed (once tried)
_flash_tried = False


def _check_name(name: str, origin: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"unknown attention backend '{name}' ({origin}); "
                         f"choose one of {', '.join(BACKENDS)}")
    return name


def set_backend(name: str | None) -> None:
    """Select the default backend ("auto", "sdpa", "flash"); None returns to the env var / sdpa."""
    global _backend
    _backend = None if name is None else _check_name(name, "set_backend")


def get_backend() -> str:
    """The default backend: set_backend's choice, else $MASKGWM_ATTENTION, else "sdpa"."""
    if _backend is not None:
        return _backend
    env = os.environ.get(ENV_VAR, "").strip().lower()
    return _check_name(env, f"environment variable {ENV_VAR}") if env else "sdpa"


def _load_flash():
    """flash_attn.flash_attn_func, or None (the reason kept in _flash_error). Tried once."""
    global _flash_func, _flash_error, _flash_tried
    if not _flash_tried:
        _flash_tried = True
        try:
            from flash_attn import flash_attn_func
        except Exception as error:  # ImportError, or a broken CUDA build raising at import
            _flash_error = f"{type(error).__name__}: {error}"
        else:
            _flash_func = flash_attn_func
    return _flash_func


def flash_available() -> bool:
    """Whether flash_attn imports here (it needs a CUDA build of the package)."""
    return _load_flash() is not None


def _flash_unsupported(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                       attn_mask: torch.Tensor | None) -> str | None:
    """Why flash cannot run these inputs (None when it can), not counting the import."""
    if attn_mask is not None:
        return ("flash_attn_func takes no attention mask; masked attention (e.g. the masked "
                "temporal baseline) must use backend 'sdpa' (or 'auto')")
    tensors = (q, k, v)
    if not all(t.is_cuda for t in tensors):
        devices = sorted({str(t.device) for t in tensors})
        return (f"flash_attn needs CUDA tensors, got device {', '.join(devices)}; "
                "run on a GPU or use backend 'sdpa' (or 'auto')")
    if not all(t.dtype in FLASH_DTYPES for t in tensors):
        dtypes = sorted({str(t.dtype) for t in tensors})
        return (f"flash_attn needs float16 or bfloat16 tensors, got {', '.join(dtypes)}; "
                "cast q, k, v (e.g. under torch.autocast) or use backend 'sdpa' (or 'auto')")
    return None


def _flash(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """flash_attn_func on the SDPA layout: [N, heads, L, d] in and out."""
    out = _flash_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return out.transpose(1, 2)


def resolve_backend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                    attn_mask: torch.Tensor | None = None, backend: str | None = None) -> str:
    """The kernel attention() will use for these inputs: "sdpa" or "flash" (errors as it would)."""
    name = get_backend() if backend is None else _check_name(backend, "backend argument")
    if name == "sdpa":
        return "sdpa"
    if name == "auto":
        if _flash_unsupported(q, k, v, attn_mask) is None and flash_available():
            return "flash"
        return "sdpa"
    # explicit "flash": say exactly why it cannot run
    reason = _flash_unsupported(q, k, v, attn_mask)
    if reason is not None:
        raise ValueError(f"attention backend 'flash' cannot run these inputs: {reason}")
    if not flash_available():
        raise RuntimeError("attention backend 'flash' needs the flash_attn package, which did "
                           f"not import ({_flash_error}); install it on a CUDA machine with "
                           "`pip install flash-attn`, or use backend 'sdpa' (or 'auto')")
    return "flash"


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
              attn_mask: torch.Tensor | None = None, backend: str | None = None) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + mask) v on [N, heads, L, d]; returns [N, heads, L, d].

    attn_mask: as for torch SDPA (bool, True = may attend; or additive float), broadcastable
    to [N, heads, L, L]. backend: None for the default (get_backend())."""
    if resolve_backend(q, k, v, attn_mask, backend) == "flash":
        return _flash(q, k, v)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
