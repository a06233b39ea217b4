"""``tnadapt.finetune`` — fine-tune a Hugging Face encoder for text classification (or a causal LM) with a tnadapt adapter.

The machinery behind the ``tnadapt`` command line, usable from Python:

* :mod:`~tnadapt.finetune.model` — load a local model (default: the embedded all-MiniLM-L6-v2; a decoder for ``--task lm``)
  and put a mean-pooling classification head (one per task) on it;
* :mod:`~tnadapt.finetune.methods` — attach an adapter by name (``metatt-4d``, ``metatt-5d``,
  ``metatt-4+1d``, ``lotr``, ``tera``, ``lora`` via peft, ``head`` for a linear probe);
* :mod:`~tnadapt.finetune.batching` — tokenisation and length-bucketed batches;
* :mod:`~tnadapt.finetune.trainer` — the training loop (AdamW, linear warm-up/decay,
  optional DMRG rank schedule, per-epoch evaluation and resumable checkpoints);
* :mod:`~tnadapt.finetune.checkpoint`, :mod:`~tnadapt.finetune.plotting`,
  :mod:`~tnadapt.finetune.counting`, :mod:`~tnadapt.finetune.inspection`.

Heavy dependencies (``transformers``, ``peft``, ``tqdm``, ``matplotlib``) are imported on
first use, never at import time.
"""

from .errors import UserError

__all__ = ["UserError"]
