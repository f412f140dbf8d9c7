"""Models (placeholder until written)."""
UNet = None
