"""ssl_art.app."""
