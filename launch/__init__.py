"""Entry points: `selfcorrect train` / `python -m launch.train` (also what `ray job submit` runs)."""
