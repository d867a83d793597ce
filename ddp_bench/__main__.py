"""`python -m ddp_bench` entry point."""

from ddp_bench.cli import main

raise SystemExit(main())
