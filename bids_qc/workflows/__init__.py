"""nipype workflow factories: ``init_participant_wf`` and ``init_group_wf`` (graphs only)."""
