"""ssl_art.eval."""
