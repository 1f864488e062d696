"""ssl_art.data."""
