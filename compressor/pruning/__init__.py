"""pruning (see DESIGN notes)."""
