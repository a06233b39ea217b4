"""``tnadapt.tt`` — tensor trains in PyTorch.

Core conventions: a :class:`TensorTrain` of order ``d`` holds cores of shape
``(r_{k-1}, n_k, r_k)`` with ``r_0 = r_d = 1``.  Importing this package loads only
``torch``, ``numpy`` and ``opt_einsum`` and changes no global state.

>>> import torch
>>> from tnadapt import tt
>>> a = torch.randn(6, 7, 8, dtype=torch.float64)
>>> x = tt.TensorTrain.from_dense(a)
>>> bool(torch.allclose(x.full(), a))
True
>>> y = x.round(max_rank=2)
>>> y.ranks
(1, 2, 2, 1)
"""

from .batch import BatchTruncationReport, TTBatch, round_batch
from .canonical import is_left_orthonormal, is_right_orthonormal, left_qr_step, orthogonalize, right_qr_step
from .cross import CrossReport, apply, cross, maxvol
from .decompositions import tt_svd
from .dmrg import EigenSweep, EigshReport, dmrg_eigsh
from .indexing import gather, getitem
from .init import init_core, make_cores
from .io import load_tt, load_tt_matrix, save_tt
from .lowrank import LowRankReport, tt_from_lowrank
from .matrix import MatrixTruncationReport, TTMatrix, round_matrix
from .matvec import ProductReport, apply_dense, kron, matmul, matmul_round, matvec, matvec_round
from .mpo_builders import heisenberg_mpo, ising_mpo, laplacian_mpo, mpo_from_terms, tridiagonal_toeplitz_mpo
from .ops import add, contract, dot, hadamard, norm, scale
from .padding import max_ranks, pad_ranks
from .randomized import round_sum
from .rounding import round_tt
from .solvers import SolveReport, SolveSweep, als_solve, amen_solve
from .tensor_train import DEFAULT_MAX_DENSE_ELEMENTS, TensorTrain
from .truncation import TruncatedSVD, TruncationReport, select_rank, truncated_svd
from .twosite import SweepReport, dmrg_sweep, merge, replace_two_site, split

__all__ = [
    "DEFAULT_MAX_DENSE_ELEMENTS",
    "BatchTruncationReport",
    "CrossReport",
    "EigenSweep",
    "EigshReport",
    "LowRankReport",
    "MatrixTruncationReport",
    "ProductReport",
    "SolveReport",
    "SolveSweep",
    "SweepReport",
    "TTBatch",
    "TTMatrix",
    "TensorTrain",
    "TruncatedSVD",
    "TruncationReport",
    "add",
    "als_solve",
    "amen_solve",
    "apply",
    "apply_dense",
    "contract",
    "cross",
    "dmrg_eigsh",
    "dmrg_sweep",
    "dot",
    "gather",
    "getitem",
    "hadamard",
    "heisenberg_mpo",
    "init_core",
    "is_left_orthonormal",
    "is_right_orthonormal",
    "ising_mpo",
    "kron",
    "laplacian_mpo",
    "left_qr_step",
    "load_tt",
    "load_tt_matrix",
    "make_cores",
    "matmul",
    "matmul_round",
    "matvec",
    "matvec_round",
    "max_ranks",
    "maxvol",
    "merge",
    "mpo_from_terms",
    "norm",
    "orthogonalize",
    "pad_ranks",
    "replace_two_site",
    "right_qr_step",
    "round_batch",
    "round_matrix",
    "round_sum",
    "round_tt",
    "save_tt",
    "scale",
    "select_rank",
    "split",
    "tridiagonal_toeplitz_mpo",
    "truncated_svd",
    "tt_from_lowrank",
    "tt_svd",
]
