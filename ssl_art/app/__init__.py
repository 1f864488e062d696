"""ssl_art.app: the nearest-style web page (:mod:`ssl_art.app.server`, stdlib http.server); imports retrieval only."""
