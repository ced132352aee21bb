"""Small shared helpers (atomic file writes, module lookup)."""

from compressor.utils.io import (
           atomic_torch_save,
           atomic_write,
           atomic_write_json,
           atomic_write_text,
)
from compressor.utils.modules import count_parameters, get_submodule, set_submodule

__all__ = ["atomic_write", "atomic_write_text", "atomic_write_json", "atomic_torch_save",
           "count_parameters", "get_submodule", "set_submodule"]
