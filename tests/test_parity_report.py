"""docs/parity.md is current: it records the digest of the files it was generated from (tests/parity/report_digest.py),
and those files have not changed since. Cheap: no Keras."""

from __future__ import annotations

from parity.report_digest import DIGEST_LINE, REPO, digest, recorded_digest, source_files

REPORT = REPO / "docs" / "parity.md"


def test_digest_sources_exist_and_line_reads_back() -> None:
    assert len(source_files()) >= 20  # each pattern matched (a moved or renamed file raises FileNotFoundError)
    assert recorded_digest(f"# title\n{DIGEST_LINE.format('ab12')}\ntext\n") == "ab12"


def test_parity_report_is_current() -> None:
    recorded = recorded_digest(REPORT.read_text(encoding="utf-8"))
    current = digest()
    assert recorded == current, (
        f"docs/parity.md is stale (it records {recorded[:12] if recorded else 'no digest'}, its sources are "
        f"{current[:12]}): run `make parity-report`"
    )
