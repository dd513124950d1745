"""The `layerwise` command: parse, call one library function per subcommand, print.

Results go to stdout (or files), progress and logs to stderr. A `LayerwiseError` becomes one line
on stderr and exit code 2, with no traceback; so does a bad flag.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings

from layerwise import __version__
from layerwise.errors import LayerwiseError

log = logging.getLogger("layerwise")


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """The flags every command that loads a model shares (declared once, in ModelConfig)."""
    from layerwise.cli.args import add_config_arguments
    from layerwise.training.config import ModelConfig

    add_config_arguments(parser, (ModelConfig,), skip=("tokenizer",))
    parser.add_argument("--seed", type=int, default=0,
                        help="seed for random init and sampling (default: %(default)s)")


def add_data_args(parser: argparse.ArgumentParser, seq_len: int = 512, num_seqs: int = 8) -> None:
    g = parser.add_argument_group("data")
    g.add_argument("--data", default=None, metavar="D",
                   help=".txt or .jsonl file, an HF dataset (hf:NAME[:CONFIG][@SPLIT]), or omit "
                        "for the embedded CPython reference text")
    g.add_argument("--text-field", default="text", help="field holding the text in .jsonl / HF data")
    g.add_argument("--seq-len", type=int, default=seq_len, help="tokens per window")
    g.add_argument("--num-seqs", type=int, default=num_seqs, help="number of windows")


def build_parser() -> argparse.ArgumentParser:
    from layerwise.cli import (
        compare_cmd,
        data_cmd,
        diagnose_cmd,
        estimate_cmd,
        eval_cmd,
        layers_cmd,
        report_cmd,
        sweep_cmd,
        train_cmd,
        tune_cmd,
    )

    parser = OneLineParser(
        prog="layerwise",
        description="Which transformer layers matter, and what happens if you train only those.",
    )
    parser.add_argument("--version", action="version", version=f"layerwise {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=OneLineParser)
    for module in (layers_cmd, diagnose_cmd, train_cmd, eval_cmd, sweep_cmd, report_cmd,
                   estimate_cmd, tune_cmd, compare_cmd, data_cmd):
        p = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        p.add_argument("-q", "--quiet", action="store_true", help="only warnings on stderr")
        module.add_arguments(p)
        p.set_defaults(run=module.run, _parser=p)
    return parser


def _configure_logging(quiet: bool) -> None:
    logging.basicConfig(
        level=logging.WARNING if quiet else logging.INFO, stream=sys.stderr,
        format="layerwise: %(message)s",
    )
    # Library chatter that says nothing to a layerwise user.
    for noisy in ("transformers", "datasets", "huggingface_hub", "urllib3", "httpx"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)
    try:
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
        import datasets

        datasets.disable_progress_bars()
    except ImportError:  # pragma: no cover - transformers is a hard dependency
        pass


# Flags whose value may start with '-' (a selection such as '-4-', the last four blocks, or a
# list of numbers): argparse would take it for an option, so `--select -4-` becomes `--select=-4-`.
SELECTION_FLAGS = ("--select", "--recovery-blocks", "--alpha", "--layers", "--lora-layers",
                   "--lr-scale")


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line (the full usage is in --help)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _join_selection_values(argv: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] in SELECTION_FLAGS and i + 1 < len(argv) and argv[i + 1].startswith("-"):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
            continue
        out.append(argv[i])
        i += 1
    return out


def _with_config_file(parser: argparse.ArgumentParser, args: argparse.Namespace,
                      argv: list[str]) -> argparse.Namespace:
    """Parse again with the YAML file's values as defaults, so that typed flags override them."""
    from layerwise.cli.args import defaults_from_document
    from layerwise.training.run_dir import read_config_file

    sub = args._parser
    doc = read_config_file(args.config)
    sub.set_defaults(**defaults_from_document(sub, doc, f"--config {args.config}",
                                              ignore=("config", "resume")))
    try:
        return parser.parse_args(argv)
    except SystemExit as exc:  # a value from the file that argparse refuses
        raise LayerwiseError(f"--config {args.config}: a value is not valid here") from exc


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = _join_selection_values(list(sys.argv[1:] if argv is None else argv))
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed its one-line usage error
        return int(exc.code or 0)
    _configure_logging(args.quiet)
    try:
        if getattr(args, "config", None):
            args = _with_config_file(parser, args, argv)
        return int(args.run(args) or 0)
    except LayerwiseError as exc:
        print(f"layerwise: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("layerwise: interrupted", file=sys.stderr)
        return 130


def entry_point() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry_point()
