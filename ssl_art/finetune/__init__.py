"""ssl_art.finetune."""
