"""Results: the CSV schema and its writing, the row built after training, the results directory, the run context."""
