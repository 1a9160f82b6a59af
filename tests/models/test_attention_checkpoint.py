"""Attention backends agree (§1.3) and gradient checkpointing is exact (§1.6)."""

import copy
import importlib.machinery
import importlib.util
import sys
import types

import pytest
import torch

from uvit_pipeline.models import Attention, UViT

TINY = dict(img_size=8, patch_size=2, in_chans=3, embed_dim=32, depth=4, num_heads=4, num_classes=5)
HAS_XFORMERS = importlib.util.find_spec("xformers") is not None


def _inputs():
    g = torch.Generator().manual_seed(3)
    return torch.randn(2, 3, 8, 8, generator=g), torch.tensor([5.0, 900.0]), torch.tensor([1, 4])


def test_sdpa_and_math_agree_fp32():
    torch.manual_seed(0)
    model = UViT(**TINY, attention="math").eval()
    x, t, y = _inputs()
    with torch.no_grad():
        ref = model(x, t, y)
        model.set_attention("sdpa")
        out = model(x, t, y)
    assert model.attention == "sdpa" and model.config["attention"] == "sdpa"
    assert (out - ref).abs().max().item() <= 1e-5


def test_attention_module_backends_agree_with_qk_scale_and_bias():
    torch.manual_seed(0)
    attn = Attention(24, 3, qkv_bias=True, qk_scale=0.3, backend="math")
    x = torch.randn(2, 7, 24)
    ref = attn(x)
    attn.set_backend("sdpa")
    assert (attn(x) - ref).abs().max().item() <= 1e-5


def test_sdpa_keeps_compute_dtype_under_autocast(monkeypatch):
    seen = []
    real = torch.nn.functional.scaled_dot_product_attention

    def spy(q, k, v, **kw):
        seen.append(q.dtype)
        return real(q, k, v, **kw)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    model = UViT(**TINY)
    x, t, y = _inputs()
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        out = model(x, t, y)
    assert seen and set(seen) == {torch.bfloat16}  # no float32 copy of q/k/v
    assert torch.isfinite(out).all()


def test_bf16_model_forward():
    model = UViT(**TINY).to(torch.bfloat16)
    x, t, y = _inputs()
    with torch.no_grad():
        assert model(x.bfloat16(), t, y).dtype == torch.bfloat16


@pytest.mark.skipif(HAS_XFORMERS, reason="xformers installed")
def test_xformers_missing_gives_clear_error():
    with pytest.raises(ValueError, match="xformers package is not installed"):
        UViT(**TINY, attention="xformers")
    with pytest.raises(ValueError, match="xformers"):
        UViT(**TINY).set_attention("xformers")


def test_xformers_model_deep_copies_and_uses_the_bld_layout(monkeypatch):
    """With a stand-in xformers (math attention on (B, L, H, Dh)), the xformers path equals math and
    the model deep-copies, as the EMA copy needs."""
    calls = []

    def memory_efficient_attention(q, k, v, scale):
        calls.append(q.shape)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, H, L, Dh)
        return ((q @ k.transpose(-2, -1)) * scale).softmax(-1).matmul(v).transpose(1, 2)

    xformers = types.ModuleType("xformers")
    xformers.__spec__ = importlib.machinery.ModuleSpec("xformers", None)
    ops = types.ModuleType("xformers.ops")
    ops.memory_efficient_attention = memory_efficient_attention
    xformers.ops = ops
    monkeypatch.setitem(sys.modules, "xformers", xformers)
    monkeypatch.setitem(sys.modules, "xformers.ops", ops)
    torch.manual_seed(0)
    model = UViT(**TINY, attention="math").eval()
    x, t, y = _inputs()
    with torch.no_grad():
        ref = model(x, t, y)
        model.set_attention("xformers")
        out = copy.deepcopy(model)(x, t, y)
    assert calls and calls[0] == (2, 18, 4, 8)  # (B, L, H, Dh): L = 2 extras + 16 patches
    assert (out - ref).abs().max().item() <= 1e-5


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_sdpa_matches_math_and_bf16_stays_close():
    torch.manual_seed(0)
    model = UViT(**TINY, attention="math").cuda().eval()
    x, t, y = (v.cuda() for v in _inputs())
    with torch.no_grad():
        ref = model(x, t, y)
        model.set_attention("sdpa")
        out = model(x, t, y)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            low = model(x, t, y).float()
    assert (out - ref).abs().max().item() <= 1e-5
    assert torch.isfinite(low).all() and (low - ref).abs().max().item() < 0.1


@pytest.mark.gpu
@pytest.mark.skipif(
    not (HAS_XFORMERS and torch.cuda.is_available()), reason="needs xformers + CUDA"
)
def test_xformers_agrees_with_math():
    torch.manual_seed(0)
    model = UViT(**TINY, attention="math").cuda().eval()
    x, t, y = (v.cuda() for v in _inputs())
    with torch.no_grad():
        ref = model(x, t, y)
        model.set_attention("xformers")
        assert (model(x, t, y) - ref).abs().max().item() <= 1e-5


def _loss_and_grads(model, x, t, y):
    model.zero_grad()
    out = model(x, t, y)
    (out**2).mean().backward()
    return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("every", [1, 2])
def test_gradient_checkpointing_is_exact(every):
    torch.manual_seed(0)
    plain = UViT(**TINY).train()
    ckpt = UViT(**TINY, use_checkpoint=True, checkpoint_every=every).train()
    ckpt.load_state_dict(plain.state_dict())
    x, t, y = _inputs()
    out_a, grads_a = _loss_and_grads(plain, x, t, y)
    out_b, grads_b = _loss_and_grads(ckpt, x, t, y)
    assert torch.equal(out_a, out_b)
    for name, g in grads_a.items():
        torch.testing.assert_close(grads_b[name], g, rtol=0, atol=1e-7, msg=name)


def test_checkpoint_used_only_where_requested(monkeypatch):
    import uvit_pipeline.models.uvit as uvit_mod

    calls = []
    real = uvit_mod.checkpoint

    def spy(fn, *args, **kw):
        calls.append(kw.get("use_reentrant"))
        return real(fn, *args, **kw)

    monkeypatch.setattr(uvit_mod, "checkpoint", spy)
    model = UViT(**TINY, use_checkpoint=True, checkpoint_every=2).train()  # 5 blocks
    x, t, y = _inputs()
    model(x, t, y).sum().backward()
    assert calls == [False, False, False]  # blocks 0, 2, 4; non-reentrant
    calls.clear()
    model.eval()
    with torch.no_grad():
        model(x, t, y)
    assert calls == []  # eval / no-grad: nothing to save
