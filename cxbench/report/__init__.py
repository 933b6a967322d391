"""Publication output: results tables (LaTeX, Markdown, CSV) built from result files."""
