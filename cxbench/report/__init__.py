"""Reports built from result files and per-sample logs: tables, leaderboards, sample browsers."""
