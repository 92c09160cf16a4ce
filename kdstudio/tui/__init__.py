"""The terminal UI: a thin Textual app over the Project façade (no SQL, no model code here)."""
