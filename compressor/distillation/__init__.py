"""distillation (see DESIGN notes)."""
