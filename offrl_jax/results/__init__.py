"""Results: per-seed records, aggregate statistics (IQM, bootstrap CIs), tables and plots."""
