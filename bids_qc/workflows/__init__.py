"""The two analysis levels: ``participant.init_participant_wf`` (a nipype graph, one node per scan)
and ``group.run_group_level`` (a plain function: table, summary, report, fine-tuning)."""
