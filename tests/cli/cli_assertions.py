"""Assertions shared by the CLI tests (imported by name: pytest puts tests/cli on sys.path)."""

from __future__ import annotations


def one_error_line(res, *fragments: str) -> str:
    """Exit 1, exactly one stderr line ``error: ...`` containing ``fragments``, no traceback."""
    assert res.exit_code == 1, (res.exit_code, res.output)
    assert "Traceback" not in res.output
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    return lines[0]
