"""Where each architecture keeps its decoder blocks, embedding, final norm and output head.

Layer indices are found *structurally*: the decoder blocks are the children of one `nn.ModuleList`,
and block i is simply its i-th child. We never recover an index by matching a regex against
parameter names, which is how PEFT's `layers_to_transform` goes wrong (an MoE expert index taken
for the layer index, module lists at the model root never matched).

`ARCHITECTURES` is a declarative map for the families we know; any other causal LM goes through a
generic fallback that looks for the repeated-block `ModuleList` holding most of the parameters.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from layerwise.errors import LayerwiseError


@dataclass(frozen=True)
class ArchSpec:
    """Dotted module paths of one architecture family (the first path that exists wins)."""

    blocks: tuple[str, ...]
    embed: tuple[str, ...]
    norm: tuple[str, ...]
    head: tuple[str, ...] = ("lm_head",)
    attn: tuple[str, ...] = ("self_attn",)  # children of a block that make up attention
    mlp: tuple[str, ...] = ("mlp",)  # children of a block that make up the feed-forward part


_LLAMA_LIKE = ArchSpec(blocks=("model.layers",), embed=("model.embed_tokens",), norm=("model.norm",))

ARCHITECTURES: dict[str, ArchSpec] = {
    **{
        name: _LLAMA_LIKE
        for name in (
            "llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "olmo",
            "olmo2", "gemma", "gemma2", "gemma3_text", "granite", "smollm3", "phi3", "cohere",
            "starcoder2", "stablelm",
        )
    },
    "phi": ArchSpec(blocks=("model.layers",), embed=("model.embed_tokens",),
                    norm=("model.final_layernorm",)),
    "gpt2": ArchSpec(blocks=("transformer.h",), embed=("transformer.wte", "transformer.wpe"),
                     norm=("transformer.ln_f",), attn=("attn",)),
    "gpt_neox": ArchSpec(blocks=("gpt_neox.layers",), embed=("gpt_neox.embed_in",),
                         norm=("gpt_neox.final_layer_norm",), head=("lm_head", "embed_out"),
                         attn=("attention",)),
    "falcon": ArchSpec(blocks=("transformer.h",), embed=("transformer.word_embeddings",),
                       norm=("transformer.ln_f",), attn=("self_attention",)),
    "opt": ArchSpec(blocks=("model.decoder.layers",),
                    embed=("model.decoder.embed_tokens", "model.decoder.embed_positions"),
                    norm=("model.decoder.final_layer_norm",), mlp=("fc1", "fc2")),
}

# Used by the generic fallback to name a block's attention and feed-forward children.
_ATTN_HINTS = ("attn", "attention")
_MLP_HINTS = ("mlp", "feed_forward", "ffn", "moe")


def is_norm(module: nn.Module) -> bool:
    """LayerNorm, RMSNorm and friends, recognised by class name (each family defines its own)."""
    return "norm" in type(module).__name__.lower()


@dataclass
class LayerMap:
    """The structural anatomy of a causal LM: what layerwise selects from and reports on."""

    model_type: str
    blocks_path: str
    blocks: nn.ModuleList
    embed: dict[str, nn.Module]
    norm: dict[str, nn.Module]
    head: dict[str, nn.Module]
    head_tied: bool
    attn_names: tuple[str, ...]
    mlp_names: tuple[str, ...]
    source: str  # "map" (known family) or "generic" (fallback)
    param_names: dict[int, str] = field(default_factory=dict, repr=False)  # id(param) -> name

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    def names_in(self, module: nn.Module) -> list[str]:
        """Model-level names of the parameters of `module` (tied parameters under their first name)."""
        return [self.param_names[id(p)] for p in module.parameters()]

    def block_params(self, index: int) -> list[tuple[str, str]]:
        """(model-level name, name within the block) for every parameter of block `index`."""
        return [(self.param_names[id(p)], local) for local, p in self.blocks[index].named_parameters()]

    def part_names(self, part: str) -> list[str]:
        """Parameter names of a non-block part: 'embed', 'norm' or 'head'."""
        modules = {"embed": self.embed, "norm": self.norm, "head": self.head}[part]
        names: list[str] = []
        for module in modules.values():
            names += [n for n in self.names_in(module) if n not in names]
        return names


def _get(root: nn.Module, path: str) -> nn.Module | None:
    try:
        return root.get_submodule(path)
    except AttributeError:
        return None


def _first(root: nn.Module, paths: tuple[str, ...]) -> tuple[str, nn.Module] | None:
    for path in paths:
        module = _get(root, path)
        if module is not None:
            return path, module
    return None


def _path_of(model: nn.Module, target: nn.Module) -> str:
    for name, module in model.named_modules():
        if module is target:
            return name
    raise LayerwiseError(f"module {type(target).__name__} is not part of the model")


def _find_block_list(model: nn.Module) -> tuple[str, nn.ModuleList] | None:
    """The ModuleList of >= 2 children of one class that holds the most parameters."""
    best, best_size = None, 0
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) < 2:
            continue
        if len({type(child) for child in module}) != 1:
            continue
        size = sum(p.numel() for p in module.parameters())
        if size > best_size:
            best, best_size = (name, module), size
    return best


def _children_matching(block: nn.Module, hints: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(n for n, _ in block.named_children() if any(h in n.lower() for h in hints))


def _inside(module: nn.Module, container: nn.Module) -> bool:
    return any(module is m for m in container.modules())


def discover_layers(model: nn.Module) -> LayerMap:
    """Find the decoder blocks, embedding, final norm and head of `model` structurally."""
    model_type = getattr(getattr(model, "config", None), "model_type", None) or type(model).__name__
    spec = ARCHITECTURES.get(model_type)
    found = _first(model, spec.blocks) if spec else None
    if found is not None and isinstance(found[1], nn.ModuleList) and len(found[1]) > 0:
        source = "map"
        blocks_path, blocks = found
    else:
        source, spec = "generic", None
        found = _find_block_list(model)
        if found is None:
            known = ", ".join(sorted(ARCHITECTURES))
            raise LayerwiseError(
                f"cannot find the decoder blocks of model type '{model_type}': it has no ModuleList "
                f"of repeated blocks; known architectures: {known}"
            )
        blocks_path, blocks = found

    embed: dict[str, nn.Module] = {}
    norm: dict[str, nn.Module] = {}
    head: dict[str, nn.Module] = {}
    if spec is not None:
        embed = {p: m for p in spec.embed if (m := _get(model, p)) is not None}
        if (hit := _first(model, spec.norm)) is not None:
            norm = {hit[0]: hit[1]}
        if (hit := _first(model, spec.head)) is not None:
            head = {hit[0]: hit[1]}
        attn_names, mlp_names = spec.attn, spec.mlp
    else:
        # Every embedding outside the blocks (token and learned position embeddings) ...
        embed = {
            n: m for n, m in model.named_modules()
            if isinstance(m, nn.Embedding) and not _inside(m, blocks)
        }
        # ... the last top-level norm outside the blocks is the final norm ...
        norms = [(n, m) for n, m in model.named_modules() if is_norm(m) and not _inside(m, blocks)]
        if norms:
            norm = dict([norms[-1]])
        attn_names = _children_matching(blocks[0], _ATTN_HINTS)
        mlp_names = _children_matching(blocks[0], _MLP_HINTS)
    # ... and the head is whatever the model itself reports as its output embedding.
    if not head and hasattr(model, "get_output_embeddings"):
        out = model.get_output_embeddings()
        if out is not None:
            head = {_path_of(model, out): out}
    if not embed and hasattr(model, "get_input_embeddings"):
        inp = model.get_input_embeddings()
        if inp is not None:
            embed = {_path_of(model, inp): inp}

    head_weight = next((getattr(m, "weight", None) for m in head.values()), None)
    head_tied = head_weight is not None and any(
        getattr(m, "weight", None) is head_weight for m in embed.values()
    )
    param_names: dict[int, str] = {}
    for name, param in model.named_parameters():  # deduplicates tied parameters
        param_names.setdefault(id(param), name)
    return LayerMap(
        model_type=model_type, blocks_path=blocks_path, blocks=blocks, embed=embed, norm=norm,
        head=head, head_tied=head_tied, attn_names=attn_names, mlp_names=mlp_names,
        source=source, param_names=param_names,
    )
