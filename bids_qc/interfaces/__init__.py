"""Thin nipype interfaces around the pure functions of bids_qc."""
