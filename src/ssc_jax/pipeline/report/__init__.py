"""The report drawn from the analysis results: figures, words, findings as text and
the self-contained HTML page. It reads result objects only."""
