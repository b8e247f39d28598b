"""Runs the command line (cli.py), which stays importable without running it."""

from eqlstream_dev.synthetic.cli import main

raise SystemExit(main())
