"""``python -m ssl_art.retrieval ...``: the same command line as the ``ssl-art`` console entry point."""

from ssl_art.cli import main

if __name__ == "__main__":
    main()
