"""Loading model weights from Lightning checkpoints or plain state dicts."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from compressor.errors import ConfigError
from compressor.utils.io import load_checkpoint

__all__ = ["load_weights"]


def load_weights(model: nn.Module, path: str | Path, prefix: str = "model.") -> nn.Module:
    """Load weights into ``model`` from a Lightning checkpoint (keys under ``prefix``) or from a
    plain ``state_dict`` file. Shapes and names must match exactly.

    Raises:
        ConfigError: the file does not exist or its weights do not fit the model.
    """
    payload = load_checkpoint(path)
    state = payload.get("state_dict", payload) if isinstance(payload, dict) else payload
    if not isinstance(state, dict):
        raise ConfigError(f"{path} holds neither a Lightning checkpoint nor a state dict.")
    if any(key.startswith(prefix) for key in state):
        state = {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise ConfigError(f"The weights in {path} do not fit the model: {error}") from None
    return model
