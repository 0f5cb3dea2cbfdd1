"""Group level of the slab motion detector: a site's own threshold from its ratings
(:mod:`.site_threshold`).

The detector itself (inference) is :mod:`bids_qc.slab_detector`; its training, caching,
simulation, evaluation and model card are :mod:`bids_qc.training.slab`.
"""
