"""ssl_art.app: the web app (FastAPI on uvicorn, optional ``[serve]`` extra): style labels, Grad-CAM, similar works.

Rooms: :mod:`~ssl_art.app.service` (what is computed, no HTTP), :mod:`~ssl_art.app.workers` (the bounded inference
pool), :mod:`~ssl_art.app.limits` (request-size limit), :mod:`~ssl_art.app.api` (routes and the error contract),
:mod:`~ssl_art.app.page` (the single-page UI) and :mod:`~ssl_art.app.server` (loading, uvicorn and connection
deadlines). It imports retrieval, data and the fine-tune model loader (the predict API), never the engine.
"""
