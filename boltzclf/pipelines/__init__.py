"""End-to-end pipelines behind the CLI: one training run, and declarative workflows comparing losses."""
