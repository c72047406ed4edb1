"""Utilities that connect gradflow to other libraries (gf.utils.dlpack, as torch.utils.dlpack)."""
from gradflow.utils import dlpack

__all__ = ["dlpack"]
