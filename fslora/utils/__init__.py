"""Small helpers shared across the library (no model code)."""
