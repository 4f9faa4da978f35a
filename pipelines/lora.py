"""diffusers' LoRA loader API for the pipelines, adapters checked against the model first; adapter guidance."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import safetensors
import torch
from diffusers.loaders import StableDiffusionLoraLoaderMixin
from diffusers.loaders.lora_base import LORA_WEIGHT_NAME_SAFE
from peft.tuners.tuners_utils import BaseTunerLayer


class MnistLoraLoaderMixin(StableDiffusionLoraLoaderMixin):
    r"""
    diffusers' LoRA loader API for a pipeline with a `unet` and an optional CLIP `text_encoder`, as Stable Diffusion's:
    `load_lora_weights`, `save_lora_weights`, `set_adapters`, `get_active_adapters`, `disable_lora`/`enable_lora`,
    `fuse_lora`/`unfuse_lora`, `delete_adapters` and `unload_lora_weights` (see diffusers'
    [`~loaders.StableDiffusionLoraLoaderMixin`]). Adapters use diffusers' file layout:
    `pytorch_lora_weights.safetensors` with keys `unet.<module>.lora_A.weight`, `unet.<module>.lora_B.weight` (and
    `text_encoder.` ones).

    Before loading, every weight of an adapter is checked against this pipeline's modules, so a file that is not an
    adapter, or an adapter trained for a base model with other shapes, fails with one clear error and leaves the
    pipeline unchanged. The adapters' weight in a single call is `cross_attention_kwargs={"scale": s}`. `unfuse_lora`
    restores the fused weights bit for bit (diffusers subtracts the adapters again, which rounds). While adapters act,
    the pipelines guide from the base model on the noisiest steps (`adapter_guidance_stop`):
    [`~MnistLoraLoaderMixin.predict_without_lora_unconditionally`] runs that unconditional branch without them.

    Example:

    ```py
    >>> pipe.load_lora_weights("user/my-handwriting", adapter_name="mine")  # doctest: +SKIP
    >>> images = pipe(class_labels=list(range(10)), cross_attention_kwargs={"scale": 0.8}).images  # doctest: +SKIP
    >>> pipe.unload_lora_weights()  # doctest: +SKIP
    ```
    """

    def load_lora_weights(
        self,
        pretrained_model_name_or_path_or_dict: str | os.PathLike | dict[str, torch.Tensor],
        adapter_name: str | None = None,
        hotswap: bool = False,
        **kwargs,
    ) -> None:
        r"""
        Load a LoRA adapter (a folder, a Hub repo id or a state dict in diffusers' layout) into the UNet (and the text
        encoder when the adapter has weights for it), as diffusers' `load_lora_weights`; `kwargs` (`weight_name`,
        `subfolder`, `revision`, `token`, ...) are those of
        [`~loaders.StableDiffusionLoraLoaderMixin.lora_state_dict`].

        Raises:
            `ValueError`: the weights cannot be read, or do not fit this pipeline's modules (an adapter of another
                base model); nothing is loaded then.

        Example:

        ```py
        >>> pipe.load_lora_weights("outputs/my-handwriting", adapter_name="mine")  # doctest: +SKIP
        >>> pipe.set_adapters(["mine", "dots"], adapter_weights=[0.7, 0.5])  # doctest: +SKIP
        ```
        """
        source = "the given state dict" if isinstance(pretrained_model_name_or_path_or_dict, dict) else None
        source = source or repr(str(pretrained_model_name_or_path_or_dict))
        try:
            state_dict, _ = self.lora_state_dict(pretrained_model_name_or_path_or_dict, **kwargs)
        except (OSError, safetensors.SafetensorError) as error:
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ValueError(
                f"Could not read LoRA weights from {source} ({reason}); expected a folder or Hub repo with "
                f"{LORA_WEIGHT_NAME_SAFE} in diffusers' LoRA layout."
            ) from error
        self.check_lora_state_dict(state_dict, source)
        super().load_lora_weights(
            pretrained_model_name_or_path_or_dict, adapter_name=adapter_name, hotswap=hotswap, **kwargs
        )

    def check_lora_state_dict(self, state_dict: dict[str, torch.Tensor], source: str = "the adapter") -> None:
        r"""
        Check that every weight of a LoRA state dict (diffusers' layout) belongs to a module of this pipeline that has
        the shape it was trained for; raises a one-line `ValueError` naming the first weight that does not fit.

        Example:

        ```py
        >>> state_dict, _ = pipe.lora_state_dict("outputs/my-handwriting")  # doctest: +SKIP
        >>> pipe.check_lora_state_dict(state_dict)  # doctest: +SKIP
        ```
        """
        if not state_dict:
            raise ValueError(f"{source} holds no weights; expected LoRA weights in diffusers' layout.")
        components = {name: getattr(self, name, None) for name in self._lora_loadable_modules}
        modules = {}
        for key, tensor in state_dict.items():
            component, _, name = key.partition(".")
            module_name, _, parameter = name.rpartition(".lora_")
            if component not in components or not module_name:
                raise ValueError(
                    f"{source} has the weight {key!r}, which is not a LoRA weight in diffusers' layout; expected "
                    f"keys like 'unet.<module>.lora_A.weight' for one of {sorted(components)}."
                )
            if components[component] is None:
                raise ValueError(f"{source} has LoRA weights for a {component}, which this pipeline does not have.")
            if component not in modules:
                modules[component] = dict(components[component].named_modules())
            module = modules[component].get(module_name)
            base = getattr(module, "base_layer", module)
            weight = getattr(base, "weight", None)
            if weight is None:
                raise ValueError(
                    f"{source} has the weight {key!r} for the {component} module {module_name!r}, which this "
                    "pipeline's model does not have; the adapter was trained for another base model."
                )
            expected = {"A": weight.shape[1], "B": weight.shape[0]}.get(parameter[:1])
            got = tensor.shape[1] if parameter[:1] == "A" else tensor.shape[0]
            if expected is not None and got != expected:
                raise ValueError(
                    f"{source} has the weight {key!r} of shape {tuple(tensor.shape)}, which does not fit the "
                    f"{component} module {module_name!r} of weight shape {tuple(weight.shape)}; the adapter was "
                    "trained for another base model."
                )

    def fuse_lora(
        self,
        components: list[str] | None = None,
        lora_scale: float = 1.0,
        safe_fusing: bool = False,
        adapter_names: list[str] | None = None,
        **kwargs,
    ) -> None:
        r"""
        diffusers' `fuse_lora` (adapters merged into the weights: no LoRA cost per call), keeping a copy of each weight
        it changes so that [`~MnistLoraLoaderMixin.unfuse_lora`] restores the base model exactly.

        Example:

        ```py
        >>> pipe.fuse_lora(lora_scale=0.8)  # doctest: +SKIP
        ```
        """
        components = list(components or self._lora_loadable_modules)
        backups = self.__dict__.setdefault("_lora_fuse_backups", {})
        for component in components:
            model = getattr(self, component, None)
            for name, module in model.named_modules() if model is not None else ():
                if isinstance(module, BaseTunerLayer) and not module.merged:
                    backups[(component, name)] = module.get_base_layer().weight.detach().clone()
        super().fuse_lora(components, lora_scale, safe_fusing, adapter_names, **kwargs)

    def unfuse_lora(self, components: list[str] | None = None, **kwargs) -> None:
        r"""
        diffusers' `unfuse_lora`, then the weights as they were before [`~MnistLoraLoaderMixin.fuse_lora`], bit for
        bit.

        Example:

        ```py
        >>> pipe.unfuse_lora()  # doctest: +SKIP
        ```
        """
        components = list(components or self._lora_loadable_modules)
        super().unfuse_lora(components, **kwargs)
        backups = self.__dict__.get("_lora_fuse_backups", {})
        for component in components:
            model = getattr(self, component, None)
            for name, module in model.named_modules() if model is not None else ():
                if (component, name) in backups and isinstance(module, BaseTunerLayer):
                    module.get_base_layer().weight.data.copy_(backups.pop((component, name)))

    def unfused_lora_layers(self, cross_attention_kwargs: dict[str, Any] | None = None) -> list[BaseTunerLayer]:
        r"""
        The UNet's LoRA layers whose adapters change its output in a call with `cross_attention_kwargs`: loaded,
        enabled and not fused into the weights (an empty list without adapters, after `disable_lora`, after
        `fuse_lora`, or at `{"scale": 0}`).

        Example:

        ```py
        >>> pipe.load_lora_weights("my-handwriting")  # doctest: +SKIP
        >>> bool(pipe.unfused_lora_layers()), bool(pipe.unfused_lora_layers({"scale": 0.0}))  # doctest: +SKIP
        (True, False)
        ```
        """
        unet = getattr(self, "unet", None)
        if (cross_attention_kwargs or {}).get("scale", 1.0) == 0:
            return []
        modules = unet.modules() if unet is not None else ()
        return [
            module
            for module in modules
            if isinstance(module, BaseTunerLayer)
            and module.active_adapters
            and not module.disable_adapters
            and not module.merged
        ]

    def predict_without_lora_unconditionally(
        self,
        layers: list[BaseTunerLayer],
        model_input: torch.Tensor,
        timestep: torch.Tensor,
        conditioning: dict[str, torch.Tensor | None],
        conditional_only: dict[str, torch.Tensor | None],
        unet_kwargs: dict[str, Any],
    ) -> torch.Tensor:
        r"""
        The UNet's prediction for a batch of both guidance branches (unconditional half first, `conditioning` the
        keyword arguments of both, `conditional_only` those of the second half) with the unconditional half run
        without the adapters of `layers`: adapter guidance (the pipelines' `adapter_guidance_stop`).

        Example:

        ```py
        >>> both = pipe.predict_without_lora_unconditionally(  # doctest: +SKIP
        ...     pipe.unfused_lora_layers(), torch.cat([latents] * 2), t, conditioning, conditional_only, {}
        ... )
        >>> base_unconditional, adapted_conditional = both.chunk(2)  # doctest: +SKIP
        ```
        """
        unconditional_input, conditional_input = model_input.chunk(2)
        unconditional = {k: v.chunk(2)[0] if v is not None else None for k, v in conditioning.items()}
        with self.lora_layers_disabled(layers):
            base = self.unet(unconditional_input, timestep, return_dict=False, **unconditional, **unet_kwargs)[0]
        adapted = self.unet(conditional_input, timestep, return_dict=False, **conditional_only, **unet_kwargs)[0]
        return torch.cat([base, adapted])

    @contextlib.contextmanager
    def lora_layers_disabled(self, layers: list[BaseTunerLayer]) -> Iterator[None]:
        r"""
        Inside the block the adapters of `layers` do not act (as after `disable_lora`); afterwards they act again,
        the `requires_grad` of every weight as it was. The denoising loop runs its adapter-guided unconditional
        branch in this block.

        Example:

        ```py
        >>> with pipe.lora_layers_disabled(pipe.unfused_lora_layers()):  # doctest: +SKIP
        ...     base_prediction = pipe.unet(sample, timestep, class_labels=labels).sample
        ```
        """
        requires_grad = [(weight, weight.requires_grad) for layer in layers for weight in layer.parameters()]
        for layer in layers:
            layer.enable_adapters(False)
        try:
            yield
        finally:
            for layer in layers:
                layer.enable_adapters(True)
            for weight, flag in requires_grad:
                weight.requires_grad_(flag)
