"""ssl_art.losses."""
