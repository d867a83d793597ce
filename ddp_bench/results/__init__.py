"""Results, at the foot of the house: the CSV schema (records.py), finding and reading rank files (rank_files.py),
the results directory (results_dir.py) and the all-reduce table's row (allreduce_table.py)."""
