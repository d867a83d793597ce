"""Report: pandas and matplotlib live here only; the run path never imports this package."""
