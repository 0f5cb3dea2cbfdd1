"""Training of the slab motion detector (:mod:`bids_qc.slab_detector`).

Modules: :mod:`.simulation` (mild, realistic k-space motion), :mod:`.cache` (sagittal stacks of
clean and moved scans), :mod:`.augment`, :mod:`.train` (the training loop and threshold),
:mod:`.evaluation` (held-out and real-pair figures), :mod:`.model_card`. The command is
``bids-qc-train-slab`` (:mod:`bids_qc.cli.train_slab`).
"""
