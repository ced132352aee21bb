"""quantization (see DESIGN notes)."""
