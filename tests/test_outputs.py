"""Every writing command checks its --out first: one-line error, exit 2, nothing written, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from autocompress.cli import main
from autocompress.paths import OutputError, ensure_writable

READ_ONLY = Path("/proc/autocompress-nowhere")  # /proc refuses new files even for root


def _commands(out: str) -> list[list[str]]:
    return [
        ["schedule", "uniform", "--model", "tiny_cnn", "--flops", "0.5", "--out", out],
        ["apply", "--model", "tiny_cnn", "--schedule", "missing.json", "--out", out],
        ["export-schedule", "runs/none", "--out", out],
        ["lut", "build", "--model", "tiny_cnn", "--out", out],
        ["train", "--model", "tiny_cnn", "--data", "digits", "--out", out],
        ["finetune", "--model", "tiny_cnn", "--schedule", "missing.json", "--out", out],
        ["search", "experiments/quickstart.yaml", "--out", out],
    ]


@pytest.mark.parametrize("where", ["below_a_file", "read_only"])
def test_unwritable_out_is_one_line_before_any_work(tmp_path, capsys, where):
    if where == "read_only" and not Path("/proc").is_dir():
        pytest.skip("needs Linux /proc as a read-only location")
    blocker = tmp_path / "a_file"
    blocker.write_text("keep me")
    out = str(blocker / "sub" / "x") if where == "below_a_file" else str(READ_ONLY / "x")
    for argv in _commands(out):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and f"autocompress {argv[0]}: error: --out" in err, (argv, err)
    assert blocker.read_text() == "keep me"


def test_out_of_the_wrong_kind(tmp_path):
    (tmp_path / "f.json").write_text("{}")
    with pytest.raises(OutputError, match="is a file; give a folder"):
        ensure_writable(tmp_path / "f.json", folder=True)
    with pytest.raises(OutputError, match="is a folder; give a file name"):
        ensure_writable(tmp_path, folder=False)
    assert ensure_writable(tmp_path / "new" / "deeper" / "s.json", folder=False) == tmp_path / "new" / "deeper" / "s.json"
    assert not (tmp_path / "new").exists(), "the check must not create anything"
