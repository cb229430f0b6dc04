"""Fused relation-masked attention ops for GKD-Den (see docs/kernels.md).

`srca` is the one op the training core imports; `impl="auto"` picks the fastest
implementation measured on this kind of device (kernels/dispatch.json)."""
from kernels.op import IMPLS, available_impls, choose_impl, srca
from kernels.reference import relation_mask, srca_reference

__all__ = ["IMPLS", "available_impls", "choose_impl", "relation_mask", "srca", "srca_reference"]
