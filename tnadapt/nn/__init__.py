"""``tnadapt.nn`` — tensor-network adapters (MetaTT) for any PyTorch model, peft-style.

* :class:`GlobalTTAdapter` — one tensor train shared by all adapted layers (MetaTT);
* :class:`MetaTTConfig` + :func:`wrap` — adapt the ``nn.Linear`` targets of a model in place;
* :func:`add_adapter`, :func:`set_adapter`, :func:`delete_adapter`, :func:`list_adapters`,
  :func:`active_adapter` — several named adapters on one model (peft's verbs);
  :func:`mixed_forward` / ``adapter_context(model, adapter_names=...)`` — one adapter per sample;
* :func:`adapter_context`, :func:`disable`, :func:`merge`, :func:`unmerge`,
  :func:`merge_and_unload`, :func:`unwrap` — steering a wrapped model;
* :func:`save_adapter` / :func:`load_adapter` — safetensors + JSON, no pickle;
* :func:`save_pretrained` / :func:`load_pretrained` — ``transformers`` models and ``Trainer`` checkpoints
  (adapter-only by default, :func:`adapter_state_dict`);
* :func:`lora_factors` / :func:`export_lora` — exact export to (peft) LoRA;
* :class:`TeRAConfig` + :func:`wrap` — TeRA (frozen random shared Tucker factors, trained vectors);
* :func:`compress_lora` — LoRA adapter(s) (peft dirs or dicts, one or several tasks) into one MetaTT;
* :func:`budget` — per-bond MetaTT ranks for a trainable-parameter target.

>>> import torch
>>> from torch import nn
>>> from tnadapt.nn import GlobalTTAdapter, MetaTTConfig, wrap, print_trainable_parameters
>>> GlobalTTAdapter(16, 16, {"layer": 2, "matrix": 2}, ranks=4).num_parameters()
192
>>> net = wrap(nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 16)), MetaTTConfig(target_modules=r"\\d", rank=4))
>>> print_trainable_parameters(net)
trainable params: 176 || all params: 720 || trainable%: 24.4444 || adapter params: 176
"""

from .budget import BudgetResult, budget, budget_for_legs
from .config import PRESETS, STRUCTURAL_MODES, AdapterConfig, MetaTTConfig, Preset
from .control import (
    ParameterCount,
    adapter_context,
    disable,
    merge,
    merge_and_unload,
    print_trainable_parameters,
    trainable_parameters,
    unmerge,
)
from .family import AdapterFamily, AdapterGroup, AdapterOwner, get_family, register_family, registered_families
from .hf_models import infer_task_type
from .injection import (
    CONTAINER_ATTR,
    AdaptedLinear,
    AdapterContainer,
    adapted_modules,
    adapter_state_dict,
    get_adapters,
    get_container,
    is_wrapped,
    unwrap,
    wrap,
)
from .lora_compress import CompressionReport, SliceError, compress_lora, read_lora
from .lora_export import export_lora, lora_factors, pad_lora_rank
from .metatt import INIT_ALIASES, METATT_FAMILY, GlobalTTAdapter, build_metatt, lora_num_parameters, parse_init
from .mixed import LayerStack, mixed_forward
from .named import (
    BASE_ADAPTER,
    active_adapter,
    active_adapters,
    add_adapter,
    check_adapter_name,
    delete_adapter,
    list_adapters,
    set_adapter,
)
from .pretrained import load_pretrained, save_pretrained
from .serialization import DEFAULT_ADAPTER, load_adapter, read_adapter_config, save_adapter
from .targets import QUERY_VALUE_NAMES, TargetInfo, default_target_modules, group_by_shape, layer_index, match_targets
from .tera import TERA_FAMILY, TeRAAdapter, TeRAConfig, build_tera
from .validation import ModeIndexError, RankClippedWarning

__all__ = [
    "BASE_ADAPTER",
    "CONTAINER_ATTR",
    "DEFAULT_ADAPTER",
    "INIT_ALIASES",
    "METATT_FAMILY",
    "PRESETS",
    "QUERY_VALUE_NAMES",
    "STRUCTURAL_MODES",
    "TERA_FAMILY",
    "AdaptedLinear",
    "AdapterConfig",
    "AdapterContainer",
    "AdapterFamily",
    "AdapterGroup",
    "AdapterOwner",
    "BudgetResult",
    "CompressionReport",
    "GlobalTTAdapter",
    "LayerStack",
    "MetaTTConfig",
    "ModeIndexError",
    "ParameterCount",
    "Preset",
    "RankClippedWarning",
    "SliceError",
    "TargetInfo",
    "TeRAAdapter",
    "TeRAConfig",
    "active_adapter",
    "active_adapters",
    "adapted_modules",
    "adapter_context",
    "adapter_state_dict",
    "add_adapter",
    "budget",
    "budget_for_legs",
    "build_metatt",
    "build_tera",
    "check_adapter_name",
    "compress_lora",
    "default_target_modules",
    "delete_adapter",
    "disable",
    "export_lora",
    "get_adapters",
    "get_container",
    "get_family",
    "group_by_shape",
    "infer_task_type",
    "is_wrapped",
    "layer_index",
    "list_adapters",
    "load_adapter",
    "load_pretrained",
    "lora_factors",
    "lora_num_parameters",
    "match_targets",
    "merge",
    "merge_and_unload",
    "mixed_forward",
    "pad_lora_rank",
    "parse_init",
    "print_trainable_parameters",
    "read_adapter_config",
    "read_lora",
    "register_family",
    "registered_families",
    "save_adapter",
    "save_pretrained",
    "set_adapter",
    "trainable_parameters",
    "unmerge",
    "unwrap",
    "wrap",
]
