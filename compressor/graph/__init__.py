"""Model structure: the dependency graph of coupled channels, physical channel removal
(``compact``) with a replayable history, layer handlers for custom modules, and MAC counting."""

from compressor.graph.attention import CompactMultiheadAttention
from compressor.graph.compact import (
    CompactionResult,
    CompactionStep,
    compact,
    compact_selection,
    compaction_history,
    load_compacted,
    replay_history,
    zero_channels,
)
from compressor.graph.dependency import Channel, ChannelGroup, DependencyGraph, Exclusion
from compressor.graph.handlers import LayerHandler, register_handler, unregister_handler
from compressor.graph.macs import count_macs, macs_by_op, model_size
from compressor.graph.masking import MaskedNorms, apply_masks

__all__ = [
    "DependencyGraph", "ChannelGroup", "Channel", "Exclusion",
    "compact", "compact_selection", "zero_channels", "CompactionStep", "CompactionResult",
    "compaction_history", "load_compacted", "replay_history",
    "LayerHandler", "register_handler", "unregister_handler",
    "MaskedNorms", "apply_masks",
    "count_macs", "macs_by_op", "model_size", "CompactMultiheadAttention",
]
