"""One source of figures: ``bench/run.py`` writes ``bench/RESULTS.md`` (date, commit, machine, targets, verdicts,
every figure) and the README quotes its targets and verdicts as they are."""

import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from run import SUMMARY_END, SUMMARY_START, quote_summary, summary_block  # noqa: E402


def test_the_readme_quotes_the_benchmark_results_as_they_are():
    results = (REPO / "bench" / "RESULTS.md").read_text(encoding="utf-8")
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = summary_block(results)
    assert summary_block(readme) == block
    assert re.search(r"Measured \d{4}-\d{2}-\d{2}, code [0-9a-f]{7,}", block), "the results name their date and commit"
    assert "CPUs" in block and "| target | verdict |" in block
    verdicts = [line.rstrip(" |").rsplit("|", 1)[-1].strip() for line in block.splitlines() if line.startswith("|") and "---" not in line][1:]
    assert verdicts and all(v.startswith(("met", "MISSED")) for v in verdicts), verdicts


def test_quoting_replaces_only_the_block_between_the_markers():
    results = f"x\n{SUMMARY_START}\nnew figures\n{SUMMARY_END}\ny"
    readme = f"# README\n\ntext\n{SUMMARY_START}\nold figures\n{SUMMARY_END}\n\nmore text\n"
    assert quote_summary(readme, results) == f"# README\n\ntext\n{SUMMARY_START}\nnew figures\n{SUMMARY_END}\n\nmore text\n"
