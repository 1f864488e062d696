"""ssl_art.retrieval."""
