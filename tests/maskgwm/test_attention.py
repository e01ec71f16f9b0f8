"""Attention backend selection: sdpa / flash / auto, with clear errors where flash cannot run."""
import math

import pytest
import torch

from maskgwm.model import attention as attn_module
from maskgwm.model.attention import attention, get_backend, resolve_backend, set_backend

N, HEADS, L, D = 3, 2, 7, 8


@pytest.fixture(autouse=True)
def default_backend(monkeypatch):
    """Every test starts (and leaves) with no backend set in code and no env var."""
    monkeypatch.delenv(attn_module.ENV_VAR, raising=False)
    set_backend(None)
    yield
    set_backend(None)


def qkv(dtype=torch.float32, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(N, HEADS, L, D, generator=g).to(device=device, dtype=dtype)
            for _ in range(3)]


def reference(q, k, v, mask=None):
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def test_sdpa_matches_explicit_softmax_attention():
    q, k, v = qkv()
    out = attention(q, k, v, backend="sdpa")
    assert out.shape == (N, HEADS, L, D)
    torch.testing.assert_close(out, reference(q, k, v), atol=1e-5, rtol=1e-5)


def test_sdpa_with_boolean_mask_matches_explicit_reference():
    q, k, v = qkv(seed=1)
    g = torch.Generator().manual_seed(2)
    mask = torch.rand(N, 1, L, L, generator=g) < 0.6
    mask |= torch.eye(L, dtype=torch.bool)  # no empty softmax row
    out = attention(q, k, v, attn_mask=mask, backend="sdpa")
    torch.testing.assert_close(out, reference(q, k, v, mask), atol=1e-5, rtol=1e-5)


def test_sdpa_is_the_default_and_auto_on_cpu_uses_it():
    q, k, v = qkv()
    assert get_backend() == "sdpa"     # flash-attn only when asked for
    assert resolve_backend(q, k, v) == "sdpa" == resolve_backend(q, k, v, backend="auto")
    assert torch.equal(attention(q, k, v), attention(q, k, v, backend="sdpa"))
    half = [t.to(torch.bfloat16) for t in (q, k, v)]
    assert resolve_backend(*half) == "sdpa"


def test_flash_on_cpu_raises_a_clear_error():
    q, k, v = qkv(dtype=torch.bfloat16)
    with pytest.raises((RuntimeError, ValueError), match="CUDA|flash-attn"):
        attention(q, k, v, backend="flash")
    q, k, v = qkv()
    with pytest.raises((RuntimeError, ValueError), match="sdpa"):
        attention(q, k, v, backend="flash")


def test_flash_with_a_mask_raises_and_says_to_use_sdpa():
    q, k, v = qkv()
    mask = torch.ones(N, 1, L, L, dtype=torch.bool)
    with pytest.raises(ValueError, match="mask.*sdpa"):
        attention(q, k, v, attn_mask=mask, backend="flash")


def test_flash_without_the_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(attn_module, "_flash_tried", True)
    monkeypatch.setattr(attn_module, "_flash_func", None)
    monkeypatch.setattr(attn_module, "_flash_error", "ModuleNotFoundError: no flash_attn")
    monkeypatch.setattr(attn_module, "_flash_unsupported", lambda *args: None)
    q, k, v = qkv()
    with pytest.raises(RuntimeError, match="pip install flash-attn"):
        attention(q, k, v, backend="flash")
    assert resolve_backend(q, k, v) == "sdpa"  # auto falls back


def test_unknown_backend_names_raise():
    q, k, v = qkv()
    with pytest.raises(ValueError, match="unknown attention backend"):
        set_backend("xformers")
    with pytest.raises(ValueError, match="unknown attention backend"):
        attention(q, k, v, backend="triton")


def test_environment_variable_selects_the_default(monkeypatch):
    monkeypatch.setenv(attn_module.ENV_VAR, "sdpa")
    assert get_backend() == "sdpa"
    monkeypatch.setenv(attn_module.ENV_VAR, "flash")
    assert get_backend() == "flash"
    q, k, v = qkv()
    with pytest.raises((RuntimeError, ValueError)):
        attention(q, k, v)  # env says flash, inputs are CPU fp32
    set_backend("sdpa")  # code overrides the env var
    assert get_backend() == "sdpa"
    torch.testing.assert_close(attention(q, k, v), reference(q, k, v), atol=1e-5, rtol=1e-5)
    set_backend(None)
    monkeypatch.setenv(attn_module.ENV_VAR, "bogus")
    with pytest.raises(ValueError, match=attn_module.ENV_VAR):
        get_backend()


def test_set_backend_round_trip():
    set_backend("flash")
    assert get_backend() == "flash"
    set_backend("auto")
    assert get_backend() == "auto"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_flash_matches_sdpa_on_cuda(dtype):
    pytest.importorskip("flash_attn")
    g = torch.Generator().manual_seed(0)
    # the shifted temporal attention shape: [B H Wk, heads, T, d] of the small preset
    shape = (2 * 18 * 24, 4, 25, 64)
    q, k, v = [torch.randn(shape, generator=g).to(device="cuda", dtype=dtype) for _ in range(3)]
    assert resolve_backend(q, k, v) == "flash"
    flash = attention(q, k, v, backend="flash")
    sdpa = attention(q, k, v, backend="sdpa")
    assert flash.shape == sdpa.shape == shape
    exact = reference(*(t.float() for t in (q, k, v)))
    tol = 2e-2 if dtype == torch.bfloat16 else 2e-3
    torch.testing.assert_close(flash.float(), sdpa.float(), atol=tol, rtol=tol)
    torch.testing.assert_close(flash.float(), exact, atol=tol, rtol=tol)
    assert resolve_backend(q, k, v, attn_mask=torch.ones(1, 1, 25, 25, dtype=torch.bool,
                                                         device="cuda")) == "sdpa"
