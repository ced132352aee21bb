"""export (see DESIGN notes)."""
