"""ssl_art.methods."""
