"""Fused relation-masked attention ops for GKD-Den (see docs/kernels.md)."""
from kernels.reference import relation_mask, srca_reference

# Until the dispatching op lands, the reference is the op.
srca = srca_reference

__all__ = ["srca", "srca_reference", "relation_mask"]
