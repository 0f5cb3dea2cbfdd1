"""Slab motion detector (inference): a 2.5D CNN that scores head motion on sagittal slabs.

The six Conv5FC3 detectors need a whole head registered to MNI; a slab of a few sagittal slices
(partial coverage) cannot be registered, and those detectors cannot judge it. This detector looks
at three adjacent 2 mm sagittal slices at a time, needs no registration, and scores a scan as the
mean over all its slice triplets, so it judges slabs and whole heads alike.

Modules: :mod:`.slices` (any scan -> RAS 2 mm sagittal stack and triplets), :mod:`.network`
(SlabNet), :mod:`.detector` (model folder, scoring). Its training, simulation, caching,
evaluation and model card are in :mod:`bids_qc.training.slab`; nothing here imports them.
"""
