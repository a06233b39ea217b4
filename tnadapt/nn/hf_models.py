"""What tnadapt reads off a ``transformers`` model without importing ``transformers`` eagerly.

:func:`is_pretrained_model`, :func:`transformers_class_name` (the exported class a model is an
instance of) and :func:`infer_task_type` (peft's ``task_type`` for that class), shared by the
``"all-linear"`` target rule, the saved base reference and the peft export.

>>> from torch import nn
>>> infer_task_type(nn.Linear(2, 2)) is None
True
"""

from __future__ import annotations

import sys

from torch import nn

__all__ = ["TASK_TYPES", "infer_task_type", "is_pretrained_model", "transformers_class_name"]

#: peft ``task_type`` -> the ``transformers.models.auto.modeling_auto`` table whose class names have it,
#: tried in this order (a class listed in several tables gets the first).
TASK_TYPES: dict[str, str] = {
    "SEQ_CLS": "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES",
    "TOKEN_CLS": "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES",
    "QUESTION_ANS": "MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES",
    "SEQ_2_SEQ_LM": "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES",
    "CAUSAL_LM": "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES",
    "FEATURE_EXTRACTION": "MODEL_MAPPING_NAMES",
}


def is_pretrained_model(model: nn.Module) -> bool:
    """Whether ``model`` is a ``transformers.PreTrainedModel`` (checked by its MRO, no import)."""
    return any(
        c.__name__ == "PreTrainedModel" and c.__module__ == "transformers.modeling_utils" for c in type(model).__mro__
    )


def transformers_class_name(model: nn.Module) -> str | None:
    """The first class of ``type(model).__mro__`` that the ``transformers`` package exports
    (``"BertForSequenceClassification"``), or ``None``."""
    transformers = sys.modules.get("transformers")
    if transformers is None:
        return None
    for cls in type(model).__mro__:
        if cls.__module__.startswith("transformers.") and getattr(transformers, cls.__name__, None) is cls:
            return cls.__name__
    return None


def infer_task_type(model: nn.Module) -> str | None:
    """peft's ``task_type`` for a ``transformers`` model class, from transformers' auto-class tables:
    ``SEQ_CLS``, ``TOKEN_CLS``, ``QUESTION_ANS``, ``SEQ_2_SEQ_LM``, ``CAUSAL_LM`` or
    ``FEATURE_EXTRACTION`` (a bare ``AutoModel`` class such as ``BertModel``); ``None`` for other
    models and classes in none of the tables."""
    name = transformers_class_name(model)
    if name is None or not is_pretrained_model(model):
        return None
    from transformers.models.auto import modeling_auto

    for task, table in TASK_TYPES.items():
        for value in getattr(modeling_auto, table, {}).values():
            if name == value or (isinstance(value, (tuple, list)) and name in value):
                return task
    return None
