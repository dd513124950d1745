"""`layerwise layers`: the block table of a model and what a selection resolves to (a dry run)."""

from __future__ import annotations

import argparse
import json
import sys

from layerwise.cli.main import add_model_args
from layerwise.errors import LayerwiseError
from layerwise.fileio import atomic_write_text

NAME = "layers"
HELP = "show a model's blocks and what a layer selection resolves to (nothing is trained)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_args(p)
    p.add_argument("--select", metavar="SPEC", default=None,
                   help="layer selection, e.g. 20%%-80%%, mid:4, 8-11:mlp, -4-, embed,head "
                        "(see docs/selection.md)")
    p.add_argument("--export", choices=("axolotl", "peft"), default=None,
                   help="print the selection as Axolotl unfrozen_parameters YAML or PEFT "
                        "LoraConfig kwargs (JSON) instead of the table")
    p.add_argument("--format", choices=("table", "json"), default="table",
                   help="table for people, json for programs")
    p.add_argument("--output", metavar="FILE", default=None,
                   help="write the result to FILE instead of stdout")


def _emit(text: str, output: str | None) -> None:
    text = text if text.endswith("\n") else text + "\n"
    if output is None:
        sys.stdout.write(text)
    else:
        atomic_write_text(output, text)


def _as_json(loaded, layers, summary, selection) -> str:
    return json.dumps({
        "model": loaded.source,
        "model_type": layers.model_type,
        "num_blocks": layers.num_blocks,
        "blocks_path": layers.blocks_path,
        "head_tied": layers.head_tied,
        "tying": _tying_json(loaded.model, layers),
        "total_parameters": summary.total,
        "trainable_parameters": summary.trainable,
        "rows": [
            {"part": r.label, "block": r.block, "parameters": r.total, "trainable": r.trainable,
             "tensors": r.tensors, "note": r.note}
            for r in summary.rows
        ],
        "selection": None if selection is None else {
            "spec": selection.spec, "blocks": list(selection.blocks), "parts": list(selection.parts),
            "parameter_names": sorted(selection.names),
        },
    }, indent=2)


def _tying_json(model, layers) -> dict | None:
    from layerwise.models.tying import count_parameters, detect_sources

    sources = detect_sources(layers.blocks)
    if all(i == j for i, j in enumerate(sources)):
        return None
    return {"sources": list(sources), **count_parameters(model).to_dict()}


def _tying_note(model, layers) -> str:
    """A line for a tied model (blocks that share another block's weights), else nothing."""
    from layerwise.models.tying import count_parameters, describe_map, detect_sources

    sources = detect_sources(layers.blocks)
    if all(i == j for i, j in enumerate(sources)):
        return ""
    c = count_parameters(model)
    return (f"tying   {describe_map(sources)}: {c.unique:,} unique parameters in {c.total:,} "
            f"positions ({len(set(sources))} of {len(sources)} blocks hold weights)\n")


def run(args: argparse.Namespace) -> int:
    from layerwise.models import discover_layers, load_model
    from layerwise.reporting.tables import layer_table
    from layerwise.selection import resolve_selection, summarize, to_axolotl_yaml, to_peft_kwargs

    if args.export and args.select is None:
        raise LayerwiseError("--export needs a selection: add --select SPEC (e.g. --select 20%-80%)")
    if args.output:
        from layerwise.fileio import check_output_file

        check_output_file(args.output, "--output")
    loaded = load_model(args.model, dtype=args.dtype, device=args.device, seed=args.seed,
                        trust_remote_code=args.trust_remote_code)
    layers = discover_layers(loaded.model)
    selection = resolve_selection(layers, args.select) if args.select is not None else None
    summary = summarize(loaded.model, layers, selection)

    if args.export == "axolotl":
        text = to_axolotl_yaml(selection, loaded.model, layers)
    elif args.export == "peft":
        try:
            kwargs, uncovered = to_peft_kwargs(selection, loaded.model, layers)
        except ValueError as exc:
            raise LayerwiseError(str(exc)) from exc
        if uncovered:
            print(f"layerwise: note: LoRA cannot adapt {len(uncovered)} selected tensors (norms, "
                  f"biases...), e.g. {uncovered[0]}; train them with a full selection",
                  file=sys.stderr)
        text = json.dumps(kwargs, indent=2)
    elif args.format == "json":
        text = _as_json(loaded, layers, summary, selection)
    else:
        text = layer_table(loaded.source, layers, summary, selection)
        note = _tying_note(loaded.model, layers)
        if note:  # after the model, type and parts lines
            lines = text.split("\n")
            text = "\n".join(lines[:3] + [note.rstrip("\n")] + lines[3:])
    _emit(text, args.output)
    return 0
