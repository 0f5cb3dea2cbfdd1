"""Training engine: cached preprocessed volumes, simulated artefacts, CV by subject, fine-tuning."""
