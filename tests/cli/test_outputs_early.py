"""Every command checks where it will write before it loads a model or computes anything."""

from __future__ import annotations

import pytest

from tests.cli.test_cli import _one_line_error, run

SWEEP = "docs/results/sweeps-smollm2/sft"


@pytest.mark.parametrize("argv, pattern", [
    (["train", "--model", "tiny:llama", "--layers", "1", "--out", "{file}"], r"--out .* is a file"),
    (["train", "--model", "tiny:llama", "--layers", "1", "--out", "{file}/sub"],
     r"is a file, so the directory cannot be created"),
    (["diagnose", "--model", "tiny:llama", "--out", "{file}"], r"--out .* is a file; expected a directory"),
    (["diagnose", "--model", "tiny:llama", "--metrics", "prune", "--save", "{file}"], r"--save .* is a file"),
    (["eval", "--model", "tiny:llama", "--out", "{file}"], r"--out .* is a file"),
    (["compare", "embedded", "embedded", "--out", "{file}"], r"--out .* is a file"),
    (["layers", "--model", "tiny:llama", "--output", "{dir}"], r"--output .* is a directory; expected a file"),
    (["sweep", "--model", "tiny:llama", "--out", "{file}"], r"--out .* is a file"),
    (["estimate", SWEEP, "--no-delta", "--no-gradient", "--out", "{file}/x.json"],
     r"--out .*x.json: .* is a file, not a directory"),
    (["report", SWEEP, "--out", "{file}"], r"--out .* is a file"),
    (["diagnose", "--model", "tiny:llama", "--out", "/proc/layerwise-test"], r"cannot write into /proc"),
])
def test_an_unwritable_output_is_refused_first(capsys, tmp_path, argv, pattern):
    file = tmp_path / "a-file"
    file.write_text("x")
    argv = [a.format(file=file, dir=tmp_path) for a in argv]
    code, out, err = run(capsys, *argv, "-q")
    _one_line_error(code, out, err, pattern)
