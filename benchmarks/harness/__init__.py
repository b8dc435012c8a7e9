"""What the scenarios of benchmarks/run.py share: child processes and their cores, the
stand-in server, scratch databases, the tool's config and runs, and the report."""
