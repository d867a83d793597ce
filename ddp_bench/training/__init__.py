"""One rank's training: the loop (loop.py), the communication hooks it arms (comm_control.py) and the
measurements taken once it has finished (after_training.py)."""
