"""Exceptions that end a run with a one-line message, and the exit codes they map to."""

EXIT_OK = 0
EXIT_FAILURE = 1  # a run that started and then failed (lost peer, exception on a rank)
EXIT_USAGE = 2  # bad flags or a request the hardware / data / filesystem cannot honour
EXIT_INTERRUPTED = 3  # stopped early by SIGTERM/SIGUSR1; rows written with status=incomplete


class UsageError(Exception):
    """Bad input, detected before anything is written: printed as one line, exit code 2.

    `detail`: lines printed before that line, such as the traceback of the user's own code (a model factory that
    raised), so the user sees where in their code it failed; the error itself stays one line.
    """

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail


class RunFailure(Exception):
    """A run that started and could not finish (a rank missing or lost): printed as one line, exit code 1."""
