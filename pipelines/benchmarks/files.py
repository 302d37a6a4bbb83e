"""The file names of evaluation artifacts: contracts between the code that writes them and every reader."""

RECORDS_FILE = "records.parquet"  # an evaluation unit's per-item records
SCORES_FILE = "scores.json"  # an evaluation unit's scores (a report's: every unit's)
LMEVAL_FILE = "results_lmeval.json"  # a unit's scores in lm-eval's results layout (lmeval_format.py)
REPORT_FILE, PLOT_FILE = "report.md", "comparison.png"  # the comparison report, for people
ROWS_FILE, HEADLINE_FILE = "rows.json", "headline.json"  # the comparison as data: per language; per model
