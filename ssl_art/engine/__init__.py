"""ssl_art.engine."""
