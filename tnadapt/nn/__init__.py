"""``tnadapt.nn`` — tensor-network adapters (MetaTT) for PyTorch models.

>>> from tnadapt.nn import GlobalTTAdapter
>>> GlobalTTAdapter(16, 16, {"layer": 2, "matrix": 2}, ranks=4).num_parameters()
192
"""

from .metatt import INIT_ALIASES, GlobalTTAdapter, lora_num_parameters, parse_init

__all__ = ["INIT_ALIASES", "GlobalTTAdapter", "lora_num_parameters", "parse_init"]
