"""``transformers`` integration of a wrapped model: ``save_pretrained`` / ``Trainer`` checkpoints and reloading.

On a ``transformers.PreTrainedModel``, :func:`tnadapt.nn.wrap` (and ``load_adapter``) install an
*instance-level* ``model.save_pretrained`` calling :func:`save_pretrained`; ``unwrap``/``unload``
remove it.  ``transformers.Trainer`` saves through ``model.save_pretrained`` (``save_model`` and every
checkpoint), so a Trainer-written directory holds, all-or-nothing (:mod:`tnadapt.atomic`):

* ``adapter_config.json`` + ``adapter_model.safetensors`` — the adapter in tnadapt's format with the
  *current* ranks and the base reference (:func:`tnadapt.nn.save_adapter`);
* ``model.safetensors`` — for ``Trainer.train(resume_from_checkpoint=...)``: by default **adapter-only**
  (the adapter and ``modules_to_save`` tensors under the model's state-dict names,
  :func:`tnadapt.nn.adapter_state_dict`), the frozen base weights only with ``base_weights=True``
  (or ``model.tnadapt.save_base_weights = True`` for the Trainer's calls).

No ``config.json`` is written, so ``AutoModel.from_pretrained(directory)`` (or any model class) fails
loudly instead of building the base model without the adapter and re-initialising the adapted
layers; reload with :func:`load_pretrained` (one call) or
``tnadapt.nn.load_adapter(Base.from_pretrained(base), directory)``.

>>> import tempfile, torch, transformers
>>> from tnadapt.nn import MetaTTConfig, wrap
>>> cfg = transformers.BertConfig(vocab_size=20, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
...                               intermediate_size=8, max_position_embeddings=8)
>>> base_dir, out = tempfile.mkdtemp(), tempfile.mkdtemp()
>>> _ = torch.manual_seed(0); transformers.BertModel(cfg).save_pretrained(base_dir)
>>> model = wrap(transformers.BertModel.from_pretrained(base_dir), MetaTTConfig(target_modules=["query"], rank=2))
>>> _ = model.save_pretrained(out)                 # what Trainer.save_model calls
>>> fresh = load_pretrained(out)                   # base from adapter_config.json, then the adapter
>>> ids = torch.tensor([[1, 2, 3]])
>>> bool(torch.equal(fresh(ids).last_hidden_state, model.eval()(ids).last_hidden_state))
True
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..atomic import check_directory_arg, write_files
from .hf_models import is_pretrained_model
from .injection import adapter_state_dict, get_container

__all__ = [
    "MODEL_WEIGHTS_NAME",
    "install_save_pretrained",
    "load_pretrained",
    "remove_save_pretrained",
    "save_pretrained",
]

#: The weights file ``transformers.Trainer`` loads on resume (``transformers.utils.SAFE_WEIGHTS_NAME``).
MODEL_WEIGHTS_NAME = "model.safetensors"

#: ``save_pretrained`` keyword arguments of ``transformers`` that do not change what is written here.
_NEUTRAL_KWARGS = frozenset(
    {"max_shard_size", "safe_serialization", "token", "save_peft_format", "save_original_format", "variant"}
)


def save_pretrained(
    model: nn.Module,
    save_directory: str | os.PathLike[str],
    is_main_process: bool = True,
    state_dict: dict[str, torch.Tensor] | None = None,
    *,
    base_weights: bool | None = None,
    push_to_hub: bool = False,
    **kwargs: Any,
) -> Path | None:
    """Write a wrapped model for ``transformers`` (see module doc); the ``save_pretrained`` of wrapped models.

    Parameters
    ----------
    model:
        A model wrapped by :func:`tnadapt.nn.wrap` (any ``nn.Module``; ``transformers`` models get
        this as ``model.save_pretrained``).
    save_directory:
        Created if needed; other files in it are kept.  Refused if it holds a ``config.json``: with
        it ``from_pretrained`` would load the base model and silently re-initialise the adapted layers.
    is_main_process:
        ``False`` writes nothing (``transformers``' convention for the other processes).
    state_dict:
        The model's state dict as gathered by the caller (``Trainer`` passes one under FSDP/DeepSpeed);
        default ``model.state_dict()``.  Only feeds ``model.safetensors``.
    base_weights:
        Also put the frozen base weights into ``model.safetensors``; default
        ``model.tnadapt.save_base_weights`` (``False``: adapter-only).
    push_to_hub:
        Not supported (``ValueError``): upload the written directory with ``huggingface_hub``.
    **kwargs:
        ``transformers``' ``max_shard_size``, ``safe_serialization``, ``token``, ``save_peft_format``,
        ``save_original_format`` are accepted and ignored (one unsharded safetensors file is
        written); ``variant`` must be ``None``; anything else raises ``TypeError``.

    Returns the directory, or ``None`` when ``is_main_process`` is false.
    """
    from .serialization import adapter_files, tensor_bytes

    unknown = sorted(set(kwargs) - _NEUTRAL_KWARGS)
    if unknown:
        raise TypeError(f"save_pretrained: unsupported argument(s) {unknown} for a tnadapt-wrapped model")
    if kwargs.get("variant") is not None:
        raise TypeError(f"variant: tnadapt writes one weights file, expected None, got {kwargs['variant']!r}")
    if push_to_hub:
        raise ValueError(
            "push_to_hub: not supported for a tnadapt-wrapped model; save, then upload the directory "
            "with huggingface_hub.upload_folder"
        )
    container = get_container(model)
    directory = check_directory_arg(save_directory, "save_directory")
    if not is_main_process:
        return None
    if (directory / "config.json").exists():
        raise ValueError(
            f"save_directory: {str(directory)!r} holds a config.json (a transformers model): beside a tnadapt "
            "save, from_pretrained would load it without the adapter and re-initialise the adapted layers; "
            "save into another directory or remove config.json"
        )
    full = container.save_base_weights if base_weights is None else bool(base_weights)
    source = model.state_dict() if state_dict is None else state_dict
    tensors = dict(source) if full else adapter_state_dict(model, source)
    meta = {"format": "pt", "tnadapt": "full" if full else "adapter-only"}
    files = adapter_files(model)
    files[MODEL_WEIGHTS_NAME] = tensor_bytes(tensors, meta)
    return write_files(directory, files, argument="save_directory")


def install_save_pretrained(model: nn.Module) -> None:
    """Give a wrapped ``transformers`` model the instance-level ``save_pretrained`` (no-op for other models)."""
    if is_pretrained_model(model):
        model.__dict__["save_pretrained"] = functools.partial(save_pretrained, model)


def remove_save_pretrained(model: nn.Module) -> None:
    """Remove what :func:`install_save_pretrained` installed (the class's ``save_pretrained`` shows again)."""
    current = model.__dict__.get("save_pretrained")
    if isinstance(current, functools.partial) and current.func is save_pretrained:
        del model.__dict__["save_pretrained"]


def load_pretrained(
    directory: str | os.PathLike[str],
    model_class: Any = None,
    *,
    base: str | os.PathLike[str] | None = None,
    trainable: bool = False,
    **from_pretrained_kwargs: Any,
) -> nn.Module:
    """Rebuild base + adapter in one call from a directory written by :func:`tnadapt.nn.save_adapter`,
    ``save_pretrained`` or ``Trainer.save_model`` (tnadapt's counterpart of peft's
    ``AutoPeftModel*.from_pretrained(adapter_dir)``).

    Loads the base with ``model_class.from_pretrained(base, **from_pretrained_kwargs)``, then the
    adapter (:func:`tnadapt.nn.load_adapter`, at the saved ranks).  Defaults: ``base`` is the
    ``base_model_name_or_path`` recorded in ``adapter_config.json``, ``model_class`` the recorded
    ``base_model_class`` looked up in the ``transformers`` package; the recorded ``base_model_revision``
    (if any, and ``base`` not given) is passed as ``revision=``.  ``base`` may be a local directory or a hub id,
    resolved as ``from_pretrained`` resolves it (``HF_HUB_OFFLINE=1``: from the local cache only).  ``ValueError`` when neither is
    given nor recorded (e.g. a base built from a config: pass ``base=`` a directory its
    ``save_pretrained`` wrote).
    """
    from .serialization import CONFIG_NAME, load_adapter, read_adapter_config

    data = read_adapter_config(directory)
    where = Path(os.fspath(directory)) / CONFIG_NAME
    reference = base if base is not None else data.get("base_model_name_or_path")
    if not reference:
        raise ValueError(
            f"base: {where} records no base_model_name_or_path (the base was not loaded by from_pretrained); "
            "pass base=<the base model's name or directory>"
        )
    if model_class is None:
        name = data.get("base_model_class")
        if not name:
            raise ValueError(f"model_class: {where} records no base_model_class; pass the transformers model class")
        import transformers

        model_class = getattr(transformers, name, None)
        if not (isinstance(model_class, type) and issubclass(model_class, transformers.PreTrainedModel)):
            raise ValueError(
                f"model_class: {where} records base_model_class {name!r}, which this transformers "
                f"{transformers.__version__} does not export as a model class; pass model_class"
            )
    if not callable(getattr(model_class, "from_pretrained", None)):
        raise TypeError(f"model_class: expected a class with from_pretrained, got {model_class!r}")
    revision = data.get("base_model_revision") if base is None else None
    if revision and "revision" not in from_pretrained_kwargs:
        from_pretrained_kwargs["revision"] = revision
    model = model_class.from_pretrained(os.fspath(reference), **from_pretrained_kwargs)
    return load_adapter(model, directory, trainable=trainable)
