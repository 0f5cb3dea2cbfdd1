#!/usr/bin/env python
"""BIDS-App entry point: ``run.py bids_dir output_dir participant|group``."""
import sys

from bids_qc.cli.run import main

if __name__ == "__main__":
    sys.exit(main())
