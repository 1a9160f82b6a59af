"""U-ViT backbone: all inputs (time, condition, patches) are tokens; long skips between shallow and deep blocks.

Faithful to the official `libs/uvit.py` / `libs/uvit_t2i.py` (docs/reference.md §1), merged into one class:
text conditioning is a constructor argument. Parameter names/order equal the official state_dict (§2).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .attention import Attention, check_backend
from .config import UViTConfig


def timestep_embedding(
    timesteps: torch.Tensor, dim: int, max_period: float = 10000.0
) -> torch.Tensor:
    """Sinusoidal embedding (B,) -> (B, dim) float32, cos block first then sin (§1.1, ADM convention)."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period)
        * torch.arange(half, dtype=torch.float32, device=timesteps.device)
        / half
    )  # (half,)
    args = timesteps[:, None].float() * freqs[None]  # (B, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:  # never happens for official configs; §1.1 appends a zero
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


def unpatchify(x: torch.Tensor, channels: int) -> torch.Tensor:
    """(B, N, p*p*C) -> (B, C, h*p, w*p); features ordered (p1, p2, C), channel fastest (§1.4)."""
    B, N, F = x.shape
    p = int(math.isqrt(F // channels))
    h = int(math.isqrt(N))
    x = x.reshape(B, h, h, p, p, channels)  # (B, h, w, p1, p2, C)
    x = x.permute(0, 5, 1, 3, 2, 4)  # (B, C, h, p1, w, p2)
    return x.reshape(B, channels, h * p, h * p)


class PatchEmbed(nn.Module):
    """Non-overlapping p x p patches -> tokens in row-major order (§1.1); key `patch_embed.proj`."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, D, h, w) -> (B, N, D)


class Mlp(nn.Module):
    """fc1 -> exact GELU -> fc2 (§1.3)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block; out-blocks first fuse the long skip with `skip_linear` (§1.3)."""

    def __init__(self, dim, num_heads, mlp_ratio, qkv_bias, qk_scale, skip, attention):
        super().__init__()
        # Registration order fixes the state_dict order of §2.1 (skip_linear last).
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads, qkv_bias, qk_scale, attention)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.skip_linear = nn.Linear(2 * dim, dim) if skip else None

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if self.skip_linear is not None:
            x = self.skip_linear(torch.cat([x, skip], dim=-1))  # (main, skip) order
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class UViT(nn.Module):
    """U-ViT noise-prediction network (unconditional, class- or text-conditional)."""

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = False,
        qk_scale: float | None = None,
        mlp_time_embed: bool = False,
        num_classes: int = -1,
        use_checkpoint: bool = False,
        conv: bool = True,
        skip: bool = True,
        clip_dim: int | None = None,
        num_clip_token: int | None = None,
        attention: str = "sdpa",
        checkpoint_every: int = 1,
    ):
        """Keyword arguments and defaults of `UViTConfig` (the original's, §1), validated there."""
        super().__init__()
        # Same fields in the same order (tests/models/test_official_configs.py checks it).
        cfg = UViTConfig(
            img_size, patch_size, in_chans, embed_dim, depth, num_heads, mlp_ratio, qkv_bias,
            qk_scale, mlp_time_embed, num_classes, use_checkpoint, conv, skip, clip_dim,
            num_clip_token, attention, checkpoint_every,
        ).validate(prefix="")  # fmt: skip
        # Constructor kwargs, e.g. to save beside checkpoints or feed count_flops.
        self.config = cfg.to_dict()
        self.img_size, self.patch_size, self.in_chans = img_size, patch_size, in_chans
        self.embed_dim, self.num_classes = embed_dim, num_classes
        self.clip_dim, self.num_clip_token = clip_dim, num_clip_token
        self.use_checkpoint, self.checkpoint_every = use_checkpoint, checkpoint_every
        self.is_text = clip_dim is not None
        self.is_class = num_classes > 0
        num_patches = (img_size // patch_size) ** 2
        # §1.2 extras: [label, time] | [time] | [time, ctx_1..ctx_T]
        self.extras = 1 + (1 if self.is_class else 0) + (num_clip_token if self.is_text else 0)
        D = embed_dim

        # Construction order mirrors the original so RNG consumption at init matches it.
        self.patch_embed = PatchEmbed(patch_size, in_chans, D)
        self.time_embed = (
            nn.Sequential(nn.Linear(D, 4 * D), nn.SiLU(), nn.Linear(4 * D, D))
            if mlp_time_embed
            else nn.Identity()
        )
        if self.is_class:
            self.label_emb = nn.Embedding(num_classes, D)
        if self.is_text:
            self.context_embed = nn.Linear(clip_dim, D)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.extras + num_patches, D))

        def block(skip_: bool) -> Block:
            return Block(D, num_heads, mlp_ratio, qkv_bias, qk_scale, skip_, attention)

        self.in_blocks = nn.ModuleList([block(False) for _ in range(depth // 2)])
        self.mid_block = block(False)
        self.out_blocks = nn.ModuleList([block(skip) for _ in range(depth // 2)])
        self.norm = nn.LayerNorm(D)
        self.decoder_pred = nn.Linear(D, patch_size**2 * in_chans)
        self.final_layer = nn.Conv2d(in_chans, in_chans, 3, padding=1) if conv else nn.Identity()
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """§1.5: trunc-normal(0.02) pos_embed and Linear weights, zero Linear bias, LayerNorm (1, 0);
        Conv2d and Embedding keep PyTorch defaults."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def set_attention(self, name: str) -> None:
        """Switch every block's attention kernel ("sdpa" | "xformers" | "math"); weights unchanged."""
        check_backend(name)
        self.config["attention"] = name
        for m in self.modules():
            if isinstance(m, Attention):
                m.set_backend(name)

    @property
    def attention(self) -> str:
        return self.mid_block.attn.backend

    def _run(self, index: int, blk: Block, x: torch.Tensor, skip=None) -> torch.Tensor:
        # Checkpoint only when it saves memory (training with autograd), every k-th block.
        if (
            self.use_checkpoint
            and self.training
            and torch.is_grad_enabled()
            and index % self.checkpoint_every == 0
        ):
            return checkpoint(blk, x, skip, use_reentrant=False)
        return blk(x, skip)

    def forward(self, x, timesteps, y=None, context=None) -> torch.Tensor:
        """x (B, C, H, W), timesteps (B,) or scalar, y (B,) long labels, context (B, T, clip_dim)."""
        if self.is_text and context is None and y is not None:
            context, y = y, None  # official t2i signature: forward(x, timesteps, context)
        B = self._check_inputs(x, y, context)
        timesteps = torch.as_tensor(timesteps, device=x.device)
        if timesteps.ndim == 0:
            timesteps = timesteps.expand(B)
        elif timesteps.shape != (B,):
            raise ValueError(
                f"timesteps must be a scalar or shape ({B},), got {tuple(timesteps.shape)}"
            )

        x = self.patch_embed(x)  # (B, N, D)
        # Cast the float32 sinusoid to the parameter dtype: stays fp32 under autocast, matches
        # a model converted with .to(bfloat16).
        t_tok = timestep_embedding(timesteps, self.embed_dim).to(self.pos_embed.dtype)
        tokens = [self.time_embed(t_tok).unsqueeze(1)]  # [(B, 1, D)]
        if self.is_class:
            tokens.insert(0, self.label_emb(y).unsqueeze(1))  # label at index 0 (§1.2)
        if self.is_text:
            tokens.append(self.context_embed(context))  # (B, T, D)
        x = torch.cat([*tokens, x], dim=1) + self.pos_embed  # (B, extras + N, D)

        # Block index i (in, mid, out) decides which blocks `checkpoint_every` checkpoints.
        skips = []
        for i, blk in enumerate(self.in_blocks):
            x = self._run(i, blk, x)
            skips.append(x)
        n_in = len(self.in_blocks)
        x = self._run(n_in, self.mid_block, x)
        for i, blk in enumerate(self.out_blocks, start=n_in + 1):
            x = self._run(i, blk, x, skips.pop())  # LIFO pairing (§1.3)

        x = self.decoder_pred(self.norm(x))  # (B, extras + N, p*p*C)
        x = unpatchify(x[:, self.extras :, :], self.in_chans)  # (B, C, H, W)
        return self.final_layer(x)

    def _check_inputs(self, x, y, context) -> int:
        exp = (self.in_chans, self.img_size, self.img_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != exp:
            raise ValueError(
                f"x must have shape (B, {exp[0]}, {exp[1]}, {exp[2]}), got {tuple(x.shape)}"
            )
        B = x.shape[0]
        if self.is_class:
            if y is None:
                raise ValueError("y (class labels) is required: model has num_classes > 0")
            if y.shape != (B,):
                raise ValueError(f"y must have shape ({B},), got {tuple(y.shape)}")
        elif y is not None:
            raise ValueError("y given but the model is not class-conditional (num_classes <= 0)")
        if self.is_text:
            exp_c = (B, self.num_clip_token, self.clip_dim)
            if context is None:
                raise ValueError("context (text embeddings) is required for a text model")
            if tuple(context.shape) != exp_c:
                raise ValueError(f"context must have shape {exp_c}, got {tuple(context.shape)}")
        elif context is not None:
            raise ValueError(
                "context given but the model is not text-conditional (clip_dim is None)"
            )
        return B
