"""Command-line interface of the BIDS-App (``run.py`` / ``bids-qc``)."""
