"""A small, CPU-fast conditional UNet for 28x28 MNIST-family images, call-compatible with `UNet2DConditionModel`."""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.loaders import PeftAdapterMixin
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput
from diffusers.utils.peft_utils import apply_lora_scale
from torch import nn


class ResidualBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, with the conditioning embedding added between the convolutions."""

    def __init__(self, in_channels: int, out_channels: int, embedding_dim: int, norm_num_groups: int, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(min(norm_num_groups, in_channels), in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.emb_proj = nn.Linear(embedding_dim, out_channels)
        self.norm2 = nn.GroupNorm(min(norm_num_groups, out_channels), out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, hidden_states: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(hidden_states)))
        h = h + self.emb_proj(emb)[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(hidden_states) + h


class MultiHeadAttention(nn.Module):
    """Scaled dot-product attention of image tokens over themselves or over an encoder sequence."""

    def __init__(self, query_dim: int, context_dim: int, head_dim: int):
        super().__init__()
        self.heads = max(1, query_dim // head_dim)
        self.to_q = nn.Linear(query_dim, query_dim, bias=False)
        self.to_kv = nn.Linear(context_dim, 2 * query_dim, bias=False)
        self.to_out = nn.Linear(query_dim, query_dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        batch, length, dim = x.shape
        q = self.to_q(x).view(batch, length, self.heads, -1).transpose(1, 2)
        k, v = self.to_kv(context).view(batch, context.shape[1], 2, self.heads, -1).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.to_out(out.transpose(1, 2).reshape(batch, length, dim))


class AttentionBlock(nn.Module):
    """Self-attention over the feature map, then (when configured) cross-attention over the text hidden states."""

    def __init__(self, channels: int, head_dim: int, cross_attention_dim: int | None, norm_num_groups: int):
        super().__init__()
        self.norm = nn.GroupNorm(min(norm_num_groups, channels), channels)
        self.self_attn = MultiHeadAttention(channels, channels, head_dim)
        self.cross_attn = None
        if cross_attention_dim is not None:
            self.cross_norm = nn.LayerNorm(channels)
            self.cross_attn = MultiHeadAttention(channels, cross_attention_dim, head_dim)

    def forward(
        self, hidden_states: torch.Tensor, context: torch.Tensor | None, context_mask: torch.Tensor | None
    ) -> torch.Tensor:
        batch, channels, height, width = hidden_states.shape
        tokens = self.norm(hidden_states).flatten(2).transpose(1, 2)
        tokens = tokens + self.self_attn(tokens, tokens)
        if self.cross_attn is not None and context is not None:
            tokens = tokens + self.cross_attn(self.cross_norm(tokens), context, context_mask)
        return hidden_states + tokens.transpose(1, 2).reshape(batch, channels, height, width)


class UNetLevel(nn.Module):
    """The residual blocks (each optionally followed by attention) of one resolution of the UNet."""

    def __init__(
        self,
        in_channels: list[int],
        out_channels: int,
        embedding_dim: int,
        attention: bool,
        head_dim: int,
        cross_attention_dim: int | None,
        norm_num_groups: int,
        dropout: float,
    ):
        super().__init__()
        self.resnets = nn.ModuleList(
            ResidualBlock(c, out_channels, embedding_dim, norm_num_groups, dropout) for c in in_channels
        )
        self.attentions = nn.ModuleList(
            AttentionBlock(out_channels, head_dim, cross_attention_dim, norm_num_groups)
            if attention
            else nn.Identity()
            for _ in in_channels
        )

    def forward(
        self,
        hidden_states: torch.Tensor,
        emb: torch.Tensor,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
        skips: tuple[torch.Tensor, ...] | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        r"""
        Run the level's blocks; on the way up, each block first concatenates the last of `skips` to its input.

        Returns the level's output and the output of every block (the skip connections of a level on the way down).
        """
        outputs = ()
        for resnet, attention in zip(self.resnets, self.attentions, strict=True):
            if skips is not None:
                hidden_states = torch.cat([hidden_states, skips[-1]], dim=1)
                skips = skips[:-1]
            hidden_states = resnet(hidden_states, emb)
            if not isinstance(attention, nn.Identity):
                hidden_states = attention(hidden_states, context, context_mask)
            outputs += (hidden_states,)
        return hidden_states, outputs


class MnistUNet2DConditionModel(ModelMixin, ConfigMixin, PeftAdapterMixin):
    r"""
    A compact conditional UNet for small images (28x28 MNIST digits and Fashion-MNIST by default).

    Its `forward` takes the same arguments as diffusers' [`UNet2DConditionModel`] and returns the same
    [`UNet2DConditionOutput`], so pipelines can use either. Compared with a stock `UNet2DConditionModel` of similar
    size it keeps attention to the small levels, uses one residual block per level on the way down and fuses keys and
    values, and it can fold 2x2 pixel patches into channels (`patch_size=2`, the released model's layout: a 28x28 digit
    is then processed at 14x14 and 7x7); docs/benchmarks.md compares their speed on a CPU (`bench/unet_speed.py`).

    Conditioning, each part optional and combinable:
    - text: cross-attention over `encoder_hidden_states` (e.g. a CLIP text model's last hidden state), with the
      tokenizer's padding mask honoured through `encoder_attention_mask`;
    - class: an embedding added to the timestep embedding; the last of the `num_class_embeds` rows is the reserved
      "null" class used for classifier-free guidance and when `class_labels` is omitted.

    Args:
        sample_size (`int`, defaults to 28): Height and width of the images the model is trained on.
        in_channels (`int`, defaults to 1): Channels of the input (1 for grayscale, 3 for RGB).
        out_channels (`int`, defaults to 1): Channels of the prediction.
        block_out_channels (`tuple[int]`, defaults to `(32, 64, 128)`): Width of each resolution level; each level
            after the first halves the resolution, so sizes must be divisible by `patch_size * 2 **
            (len(block_out_channels) - 1)` (`downsample_factor`).
        layers_per_block (`int`, defaults to 1): Residual blocks per level on the way down (one more on the way up).
        attention_levels (`tuple[bool]`, defaults to `(False, True, True)`): Which levels have attention blocks.
        attention_head_dim (`int`, defaults to 32): Channels per attention head.
        cross_attention_dim (`int`, *optional*): Hidden size of the text encoder; `None` for a model without text.
        num_class_embeds (`int`, *optional*): Number of classes **plus one** for the null class; `None` for a model
            without class conditioning.
        norm_num_groups (`int`, defaults to 8): Groups of the group normalisations.
        dropout (`float`, defaults to 0.0): Dropout inside the residual blocks.
        patch_size (`int`, defaults to 1): Side of the square patches folded into channels before the first
            convolution (space-to-depth, `pixel_unshuffle`) and unfolded after the last one (`pixel_shuffle`). With
            2 the first level runs at half the image's resolution; 1 (the default) keeps the full resolution.
        upsample_type (`str`, defaults to `"interpolate"`): How the way up doubles the resolution: `"interpolate"`
            (nearest-neighbour, then a 3x3 convolution at the same width, as diffusers' `Upsample2D`) or
            `"conv_transpose"` (a 2x2 stride-2 transposed convolution straight to the next level's width, which also
            narrows the following block's input).
        time_cond_proj_dim (`int`, *optional*): Width of an extra conditioning vector `timestep_cond` projected into
            the timestep embedding, as in `UNet2DConditionModel`; few-step (LCM) students use it for the guidance
            scale. `None` (the default) adds no parameters.

    Example:

    ```py
    >>> import torch
    >>> from mnist_diffusion import MnistUNet2DConditionModel

    >>> unet = MnistUNet2DConditionModel(num_class_embeds=11)
    >>> noise = torch.randn(4, 1, 28, 28)
    >>> unet(noise, timestep=500, class_labels=torch.tensor([0, 1, 2, 10])).sample.shape
    torch.Size([4, 1, 28, 28])
    ```
    """

    @register_to_config
    def __init__(
        self,
        sample_size: int = 28,
        in_channels: int = 1,
        out_channels: int = 1,
        block_out_channels: tuple[int, ...] = (32, 64, 128),
        layers_per_block: int = 1,
        attention_levels: tuple[bool, ...] = (False, True, True),
        attention_head_dim: int = 32,
        cross_attention_dim: int | None = None,
        num_class_embeds: int | None = None,
        norm_num_groups: int = 8,
        dropout: float = 0.0,
        patch_size: int = 1,
        upsample_type: str = "interpolate",
        time_cond_proj_dim: int | None = None,
    ):
        super().__init__()
        if len(attention_levels) != len(block_out_channels):
            raise ValueError(
                f"`attention_levels` has {len(attention_levels)} entries but `block_out_channels` has "
                f"{len(block_out_channels)}; expected one entry per level."
            )
        if num_class_embeds is not None and num_class_embeds < 2:
            raise ValueError(
                f"`num_class_embeds` must be at least 2 (classes plus the null class), got {num_class_embeds}."
            )

        if not isinstance(patch_size, int) or patch_size < 1:
            raise ValueError(f"`patch_size` must be a positive integer, got {patch_size!r}.")
        if upsample_type not in ("interpolate", "conv_transpose"):
            raise ValueError(f"`upsample_type` is {upsample_type!r}; expected 'interpolate' or 'conv_transpose'.")

        base = block_out_channels[0]
        embedding_dim = 4 * base
        self.time_proj = Timesteps(base, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(base, embedding_dim, cond_proj_dim=time_cond_proj_dim)
        self.class_embedding = nn.Embedding(num_class_embeds, embedding_dim) if num_class_embeds else None
        self.conv_in = nn.Conv2d(in_channels * patch_size**2, base, 3, padding=1)

        level_args = dict(
            embedding_dim=embedding_dim,
            head_dim=attention_head_dim,
            cross_attention_dim=cross_attention_dim,
            norm_num_groups=norm_num_groups,
            dropout=dropout,
        )
        self.down_levels = nn.ModuleList()
        self.downsamplers = nn.ModuleList()
        skip_channels = [base]
        channels = base
        for i, (width, attention) in enumerate(zip(block_out_channels, attention_levels, strict=True)):
            inputs = [channels] + [width] * (layers_per_block - 1)
            self.down_levels.append(UNetLevel(inputs, width, attention=attention, **level_args))
            skip_channels += [width] * layers_per_block
            channels = width
            if i < len(block_out_channels) - 1:
                self.downsamplers.append(nn.Conv2d(width, width, 3, stride=2, padding=1))
                skip_channels.append(width)

        self.mid_level = UNetLevel([channels, channels], channels, attention=attention_levels[-1], **level_args)

        self.up_levels = nn.ModuleList()
        self.upsamplers = nn.ModuleList()
        for i, (width, attention) in reversed(list(enumerate(zip(block_out_channels, attention_levels, strict=True)))):
            inputs = []
            for _ in range(layers_per_block + 1):
                inputs.append(channels + skip_channels.pop())
                channels = width
            self.up_levels.append(UNetLevel(inputs, width, attention=attention, **level_args))
            if i > 0 and upsample_type == "interpolate":
                self.upsamplers.append(nn.Conv2d(width, width, 3, padding=1))
            elif i > 0:
                channels = block_out_channels[i - 1]
                self.upsamplers.append(nn.ConvTranspose2d(width, channels, 2, stride=2))

        self.norm_out = nn.GroupNorm(min(norm_num_groups, base), base)
        self.conv_out = nn.Conv2d(base, out_channels * patch_size**2, 3, padding=1)

    @property
    def downsample_factor(self) -> int:
        """Height and width of an input must be multiples of this number."""
        return self.config.patch_size * 2 ** (len(self.config.block_out_channels) - 1)

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        safe_serialization: bool = True,
        variant: str | None = None,
        max_shard_size: int | str = "10GB",
        **kwargs,
    ) -> None:
        r"""
        `ModelMixin.save_pretrained`, without this machine's folder in the saved config: a `_name_or_path` that is a
        local path rather than a Hub repo id is left out (see [`~models.saved_config.without_local_paths`]). The
        arguments a pipeline's `save_pretrained` passes on are named, as diffusers looks them up in the signature.
        """
        from mnist_diffusion.models.saved_config import without_local_paths  # a package-only method (not uploaded)

        with without_local_paths(self):
            super().save_pretrained(
                save_directory,
                safe_serialization=safe_serialization,
                variant=variant,
                max_shard_size=max_shard_size,
                **kwargs,
            )

    def _conditioning_embedding(
        self,
        timestep: torch.Tensor | float | int,
        class_labels: torch.Tensor | None,
        timestep_cond: torch.Tensor | None,
        batch: int,
        sample: torch.Tensor,
    ) -> torch.Tensor:
        timesteps = torch.as_tensor(timestep, device=sample.device)
        if timesteps.ndim == 0:
            timesteps = timesteps[None]
        if timesteps.shape[0] not in (1, batch):
            raise ValueError(f"Got {timesteps.shape[0]} timesteps for a batch of {batch}; expected 1 or {batch}.")
        if timestep_cond is not None and self.config.time_cond_proj_dim is None:
            raise ValueError(
                "`timestep_cond` was given but this model has no `time_cond_proj_dim` to project it; pass None."
            )
        if timestep_cond is not None:
            timestep_cond = timestep_cond.to(device=sample.device, dtype=sample.dtype)
        emb = self.time_embedding(self.time_proj(timesteps.expand(batch)).to(sample.dtype), timestep_cond)
        if self.class_embedding is not None:
            if class_labels is None:
                class_labels = torch.full((batch,), self.config.num_class_embeds - 1, device=sample.device)
            emb = emb + self.class_embedding(class_labels.to(sample.device).long())
        elif class_labels is not None:
            raise ValueError(
                "`class_labels` were given but this model has no class embedding (`num_class_embeds=None`)."
            )
        return emb

    def _upsample(self, index: int, hidden_states: torch.Tensor) -> torch.Tensor:
        """Double the resolution after up level `index` (nearest-neighbour + convolution, or conv-transpose)."""
        if self.config.upsample_type == "interpolate":
            hidden_states = F.interpolate(hidden_states, scale_factor=2.0, mode="nearest")
        return self.upsamplers[index](hidden_states)

    @apply_lora_scale("cross_attention_kwargs")
    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        encoder_hidden_states: torch.Tensor | None = None,
        class_labels: torch.Tensor | None = None,
        timestep_cond: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        cross_attention_kwargs: dict | None = None,
        return_dict: bool = True,
    ) -> UNet2DConditionOutput | tuple[torch.Tensor]:
        r"""
        Predict the noise (or `v`, or the clean sample, depending on how it was trained) for a noisy `sample`.

        Args:
            sample (`torch.Tensor`): Noisy images of shape `(batch, in_channels, height, width)`.
            timestep (`torch.Tensor`, `float` or `int`): The diffusion timestep, one for all or one per sample.
            encoder_hidden_states (`torch.Tensor`, *optional*): Text hidden states `(batch, tokens, dim)`; ignored
                (no cross-attention) when `None`.
            class_labels (`torch.Tensor`, *optional*): Class ids `(batch,)`; the null class when omitted.
            timestep_cond (`torch.Tensor`, *optional*): `(batch, time_cond_proj_dim)` added (projected) to the
                timestep embedding, e.g. the guidance-scale embedding of a few-step student; only for models built
                with `time_cond_proj_dim`.
            encoder_attention_mask (`torch.Tensor`, *optional*): `(batch, tokens)`, 1 for real tokens, 0 for padding.
            cross_attention_kwargs (`dict`, *optional*): As in `UNet2DConditionModel`, but only `{"scale": s}`: the
                weight of the loaded LoRA adapters for this call (this model has no attention processors).
            return_dict (`bool`, defaults to `True`): Return a [`UNet2DConditionOutput`] instead of a tuple.
        """
        if cross_attention_kwargs:
            raise ValueError(
                f"`cross_attention_kwargs` {sorted(cross_attention_kwargs)} are not supported by "
                f"{self.__class__.__name__}; it has no attention processors. Pass None, {{}} or {{'scale': s}}."
            )
        batch, _, height, width = sample.shape
        if height % self.downsample_factor or width % self.downsample_factor:
            raise ValueError(
                f"Sample size {height}x{width} is not divisible by {self.downsample_factor}, which this "
                f"{len(self.config.block_out_channels)}-level network with patch_size {self.config.patch_size} needs."
            )
        emb = self._conditioning_embedding(timestep, class_labels, timestep_cond, batch, sample)
        context_mask = None
        if encoder_hidden_states is not None and encoder_attention_mask is not None:
            context_mask = encoder_attention_mask.to(torch.bool)[:, None, None, :]

        # 1. patches to channels, first convolution
        h = self.conv_in(F.pixel_unshuffle(sample, self.config.patch_size))
        skips = (h,)
        # 2. down: each level's block outputs, and each downsampler's output, are kept for the way up
        for i, level in enumerate(self.down_levels):
            h, outputs = level(h, emb, encoder_hidden_states, context_mask)
            skips += outputs
            if i < len(self.downsamplers):
                h = self.downsamplers[i](h)
                skips += (h,)
        # 3. middle
        h, _ = self.mid_level(h, emb, encoder_hidden_states, context_mask)
        # 4. up: each block takes the latest skip connection; the resolution doubles between levels
        for i, level in enumerate(self.up_levels):
            num_blocks = len(level.resnets)
            h, _ = level(h, emb, encoder_hidden_states, context_mask, skips=skips[-num_blocks:])
            skips = skips[:-num_blocks]
            if i < len(self.upsamplers):
                h = self._upsample(i, h)
        # 5. output convolution, channels back to patches
        out = F.pixel_shuffle(self.conv_out(F.silu(self.norm_out(h))), self.config.patch_size)
        if not return_dict:
            return (out,)
        return UNet2DConditionOutput(sample=out)
