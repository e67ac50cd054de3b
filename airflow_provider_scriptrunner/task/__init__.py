"""What a task does with a job, shared by the worker and the triggerer: output, limits, outcome, ownership."""
