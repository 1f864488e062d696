"""ssl_art.models."""
