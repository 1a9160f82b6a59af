"""AutoencoderKL wrapper on a tiny random f=8 VAE saved and reloaded from disk (docs/reference.md §4.5)."""

from __future__ import annotations

import pytest
import torch
from diffusers import AutoencoderKL

from uvit_pipeline.encoders import autoencoder as ae


@pytest.fixture(scope="module")
def vae(vae_dir):
    return ae.load_autoencoder(vae_dir)


@pytest.fixture
def images():
    return torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1


def test_load_from_directory_is_frozen(vae):
    assert isinstance(vae, AutoencoderKL)
    assert not vae.training
    assert all(not p.requires_grad for p in vae.parameters())


def test_encode_moments_shape_and_consistency(vae, images):
    moments = ae.encode_moments(vae, images)
    assert moments.shape == (3, 8, 4, 4) and moments.dtype == torch.float32
    with torch.no_grad():
        dist = vae.encode(images).latent_dist
    mean, logvar = moments.chunk(2, dim=1)
    torch.testing.assert_close(mean, dist.mean)
    torch.testing.assert_close(logvar.clamp(-30, 20), dist.logvar)
    # raw moments = quant_conv(encoder(x)), as in the original encode_moments
    with torch.no_grad():
        raw = vae.quant_conv(vae.encoder(images))
    torch.testing.assert_close(moments, raw)
    with pytest.raises(ValueError, match="x: expected"):
        ae.encode_moments(vae, images[:, :1])


def test_sample_latents_statistics_and_scale():
    b, h = 4, 32
    mean = torch.randn(b, 4, h, h, generator=torch.Generator().manual_seed(2))
    logvar = torch.tensor([-2.0, 0.0, 1.0, 50.0]).view(1, 4, 1, 1).expand(b, 4, h, h)
    moments = torch.cat([mean, logvar], dim=1)
    z = ae.sample_latents(moments, 0.5, generator=torch.Generator().manual_seed(3))
    assert z.shape == (b, 4, h, h) and z.dtype == torch.float32
    noise = z / 0.5 - mean
    std = noise.transpose(0, 1).reshape(4, -1).std(dim=1)
    expected = torch.exp(0.5 * torch.tensor([-2.0, 0.0, 1.0, 20.0]))  # logvar 50 clamped to 20
    torch.testing.assert_close(std, expected, rtol=0.05, atol=0)
    # same generator seed -> same sample; the draw is ε ~ N(0, I) from that generator
    again = ae.sample_latents(moments, 0.5, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(z, again)
    eps = torch.randn(mean.shape, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(z, (mean + torch.exp(0.5 * logvar.clamp(-30, 20)) * eps) * 0.5)
    # fp16 moments (as stored by the feature store) are sampled in fp32
    assert ae.sample_latents(moments.half(), 0.18215).dtype == torch.float32
    with pytest.raises(ValueError, match="moments"):
        ae.sample_latents(mean[:, :3], 0.18215)


def test_decode_shape_scaling_and_chunking(vae):
    z = torch.randn(5, 4, 4, 4, generator=torch.Generator().manual_seed(4))
    scale = 0.18215
    out_all = ae.decode_latents(vae, z, scale, chunk_size=50)
    out_one = ae.decode_latents(vae, z, scale, chunk_size=1)
    out_two = ae.decode_latents(vae, z, scale, chunk_size=2)
    assert out_all.shape == (5, 3, 32, 32) and out_all.dtype == torch.float32
    torch.testing.assert_close(out_one, out_all, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out_two, out_all, rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        direct = vae.decode(z / scale).sample
    torch.testing.assert_close(out_all, direct, rtol=1e-4, atol=1e-5)
    bf16 = ae.decode_latents(vae, z, scale, chunk_size=5, autocast_dtype=torch.bfloat16)
    assert bf16.dtype == torch.float32 and bf16.shape == out_all.shape
    with pytest.raises(ValueError, match="chunk_size"):
        ae.decode_latents(vae, z, scale, chunk_size=0)


def test_identity_is_stable_and_weight_sensitive(vae, vae_dir):
    ident = ae.autoencoder_identity(vae, vae_dir)
    assert ident["name"] == str(vae_dir)
    assert ident["downsample_factor"] == 8 and ident["latent_channels"] == 4
    assert len(ident["sha256"]) == 64
    reloaded = ae.load_autoencoder(vae_dir)
    assert ae.autoencoder_identity(reloaded, vae_dir)["sha256"] == ident["sha256"]
    with torch.no_grad():
        reloaded.decoder.conv_out.bias[0] += 1e-3
    assert ae.state_dict_sha256(reloaded) != ident["sha256"]


# huggingface_hub warns about an argument diffusers still passes; unrelated to what is tested
@pytest.mark.filterwarnings("ignore:The `local_dir_use_symlinks` argument:UserWarning")
def test_load_errors_name_the_catalog_entry(tmp_path):
    with pytest.raises(RuntimeError, match="catalog entry `autoencoder`/`decoder`") as info:
        ae.load_autoencoder("someorg/no-such-vae", local_files_only=True, cache_dir=tmp_path)
    assert "stabilityai/sd-vae-ft-ema" in str(info.value)
    assert "CompVis/stable-diffusion-v1-4" in str(info.value)
    with pytest.raises(FileNotFoundError, match="catalog entry `autoencoder`/`decoder`"):
        ae.load_autoencoder(tmp_path / "missing")
    with pytest.raises(ValueError, match="LDM-format"):
        ae.load_autoencoder(tmp_path / "autoencoder_kl.pth")
