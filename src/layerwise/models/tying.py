r"""Layer tying: block i computes with the weights of an earlier block j (one `Parameter`, two places).

A *tying map* says, for every decoder block, whose weights it uses: `sources[i] = i` means block i
has its own weights, `sources[i] = j < i` means it shares block j's. The map is kept *rooted*
(`sources[sources[i]] == sources[i]`): tying i to a block that is itself tied goes to that
block's source, so a tied block always names the block that holds the weights.

How the sharing is done matters (the faults of the official Dynamic-Layer-Tying code are what
happens when it is done the other way; PAPERS.md section 5):

- **tie** i -> j: every parameter slot of block i is pointed at block j's `Parameter` object
  (`setattr(module, name, param_j)`). The model then holds one tensor in two places: the optimizer
  sees it once, and autograd adds the gradients of both positions into its `.grad` (the ALBERT
  semantics). Block i's own parameters leave the optimizer with their state.
- **untie** i: block i gets fresh `Parameter`s cloned from its source, which join the source's
  optimizer parameter group with a *copy* of the source's AdamW state (step count and both
  moments), so the untied block continues from where the shared weights were, not from a cold
  optimizer.
- `alias=True` reproduces the official code for a faithful run: tying assigns `param.data`
  (the two `Parameter` objects share storage, the tied one is frozen), and untying only sets
  `requires_grad=True`, so an "untied" block still shares storage with its former source and the
  shared tensor receives two optimizer updates per step.

The optimizer's parameter lists are kept in model order after every change, so a checkpoint's
optimizer state (saved by position) always matches a model rebuilt from the same map.

Counts (`TyingCounts`): *total* = the parameters of the untied model (every position counted),
*unique* = distinct tensors (storage), *trainable* = distinct tensors that receive gradients.

On disk (`save_tied`, `load_tying`): `tying.json` beside the weights. The *full* form writes every
position's weights (a plain HF checkpoint that transformers loads without layerwise, sharing lost);
the *compact* form writes each shared tensor once, as `tied.safetensors` (so plain transformers
refuses it instead of loading random weights for the tied blocks), and layerwise restores the
sharing when it loads either form.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from layerwise.errors import LayerwiseError

TYING_FILE = "tying.json"
COMPACT_WEIGHTS = "tied.safetensors"


# ---- the map ------------------------------------------------------------------------------
def untied(num_blocks: int) -> tuple[int, ...]:
    return tuple(range(num_blocks))


def check_map(sources, num_blocks: int, what: str = "tying map") -> tuple[int, ...]:
    """Validate a map (each block's source <= itself, in range) and return it rooted."""
    sources = list(sources)
    if len(sources) != num_blocks:
        raise LayerwiseError(f"{what} has {len(sources)} entries; the model has {num_blocks} blocks "
                             "(a map for another model?)")
    for i, j in enumerate(sources):
        if isinstance(j, bool) or not isinstance(j, int):
            raise LayerwiseError(f"{what}: block {i}'s source {j!r} is not a block index")
        if j < 0 or j >= num_blocks:
            raise LayerwiseError(f"{what}: block {i} -> {j}: no block {j} (the model has "
                                 f"{num_blocks} blocks)")
        if j > i:
            raise LayerwiseError(f"{what}: block {i} -> {j}: a block can only share the weights of "
                                 "an earlier block (or its own)")
    return rooted(sources)


def rooted(sources) -> tuple[int, ...]:
    out = list(sources)
    for i in range(len(out)):  # sources[j] <= j, so out[out[i]] is already rooted
        out[i] = out[out[i]]
    return tuple(out)


def describe_map(sources) -> str:
    """'0-11 own' or '1<-0, 3<-2' style: the tied blocks and their sources."""
    tied = [f"{i}<-{j}" for i, j in enumerate(sources) if i != j]
    return ", ".join(tied) if tied else "none (every block has its own weights)"


def unique_blocks(sources) -> list[int]:
    return sorted(set(sources))


# ---- model surgery ------------------------------------------------------------------------
def _slots(block: nn.Module) -> list[tuple[nn.Module, str, str]]:
    """(owning module, attribute, local name) for every parameter slot of a block, in order."""
    out = []
    for mod_name, module in block.named_modules(remove_duplicate=False):
        for attr, _p in module.named_parameters(recurse=False, remove_duplicate=False):
            out.append((module, attr, f"{mod_name}.{attr}" if mod_name else attr))
    return out


def _check_same_shape(blocks: nn.ModuleList, i: int, j: int) -> None:
    a = [(n, tuple(getattr(m, at).shape)) for m, at, n in _slots(blocks[i])]
    b = [(n, tuple(getattr(m, at).shape)) for m, at, n in _slots(blocks[j])]
    if a != b:
        raise LayerwiseError(f"blocks {i} and {j} differ in structure; they cannot share weights")


class _OptimizerBook:
    """Where each parameter sits in an optimizer, so tying can move parameters in and out."""

    def __init__(self, optimizer: torch.optim.Optimizer | None):
        self.opt = optimizer

    def group_of(self, p: nn.Parameter) -> dict | None:
        if self.opt is None:
            return None
        for g in self.opt.param_groups:
            if any(q is p for q in g["params"]):
                return g
        return None

    def remove(self, p: nn.Parameter) -> None:
        g = self.group_of(p)
        if g is not None:
            g["params"] = [q for q in g["params"] if q is not p]
            self.opt.state.pop(p, None)

    def add_like(self, new: nn.Parameter, like: nn.Parameter) -> None:
        """`new` joins `like`'s group with a copy of `like`'s state (step and moments)."""
        g = self.group_of(like)
        if g is None:
            return
        g["params"].append(new)
        state = self.opt.state.get(like)
        if state:
            self.opt.state[new] = {k: (v.detach().clone() if torch.is_tensor(v) else v)
                                   for k, v in state.items()}

    def reorder(self, model: nn.Module) -> None:
        """Each group's parameters in model order (what a fresh optimizer would hold)."""
        if self.opt is None:
            return
        order = {id(p): k for k, p in enumerate(model.parameters())}
        for g in self.opt.param_groups:
            g["params"].sort(key=lambda p: order.get(id(p), len(order)))


@dataclass
class TyingCounts:
    total: int  # every position, as the untied model would hold them
    unique: int  # distinct tensors
    trainable: int  # distinct tensors with a gradient
    optimizer_state_bytes: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)


class TiedBlocks:
    """The tying state of one model's blocks, and the operations that change it."""

    def __init__(self, model: nn.Module, blocks: nn.ModuleList, optimizer=None, alias: bool = False):
        self.model, self.blocks, self.alias = model, blocks, alias
        self.book = _OptimizerBook(optimizer)
        self.sources = list(untied(len(blocks)))
        self.n = len(blocks)

    def bind_optimizer(self, optimizer) -> None:
        self.book = _OptimizerBook(optimizer)

    # -- operations
    def tie(self, i: int, j: int) -> None:
        """Block i uses block j's weights from now on (j < i; j's own source if j is tied)."""
        if not 0 <= j < i < self.n:
            raise LayerwiseError(f"cannot tie block {i} to block {j}: only to an earlier block")
        _check_same_shape(self.blocks, i, j)
        if self.alias:
            return self._alias_tie(i, j)
        root = self.sources[j]
        if self.sources[i] == root:
            return
        was_root = self.sources[i] == i
        followers = [m for m in range(self.n) if m != i and self.sources[m] == i] if was_root else []
        src_slots = _slots(self.blocks[root])
        for (module, attr, _), (smod, sattr, _) in zip(_slots(self.blocks[i]), src_slots):
            old, new = getattr(module, attr), getattr(smod, sattr)
            if old is new:
                continue
            if was_root:
                self.book.remove(old)
            setattr(module, attr, new)
        self.sources[i] = root
        for m in followers:  # blocks that shared i's weights now share its new source's
            self._point(m, root)
        self.book.reorder(self.model)

    def untie(self, i: int) -> None:
        """Block i gets its own weights: a copy of its source's, with a copy of their optimizer state."""
        if self.sources[i] == i:
            return
        if self.alias:
            return self._alias_untie(i)
        for module, attr, _ in _slots(self.blocks[i]):
            shared = getattr(module, attr)
            own = nn.Parameter(shared.detach().clone(), requires_grad=shared.requires_grad)
            setattr(module, attr, own)
            self.book.add_like(own, shared)
        self.sources[i] = i
        self.book.reorder(self.model)

    def set_source(self, i: int, j: int) -> None:
        """The one decision an agent makes: block i trains its own weights (j == i) or uses j's."""
        if j == i:
            self.untie(i)
        else:
            self.tie(i, j)

    def apply(self, sources) -> None:
        """Make the model's tying equal to the rooted map `sources`."""
        sources = check_map(sources, self.n)
        for i in range(self.n):  # untie first, so no block is left pointing at a re-tied one
            if sources[i] == i:
                self.untie(i)
        for i in range(self.n):
            if sources[i] != i:
                self.tie(i, sources[i])

    def _point(self, m: int, root: int) -> None:
        for (module, attr, _), (smod, sattr, _) in zip(_slots(self.blocks[m]), _slots(self.blocks[root])):
            setattr(module, attr, getattr(smod, sattr))
        self.sources[m] = root

    # -- the official code's behaviour (faithful runs only)
    def _alias_tie(self, i: int, j: int) -> None:
        for (module, attr, _), (smod, sattr, _) in zip(_slots(self.blocks[i]), _slots(self.blocks[j])):
            p = getattr(module, attr)
            p.data = getattr(smod, sattr).data  # storage aliasing, as `modified_param.data = ...`
            p.requires_grad_(False)
        self.sources[i] = j

    def _alias_untie(self, i: int) -> None:
        for module, attr, _ in _slots(self.blocks[i]):
            getattr(module, attr).requires_grad_(True)  # no clone: the storage stays shared
        self.sources[i] = i

    # -- accounting
    def counts(self) -> TyingCounts:
        return count_parameters(self.model, self.book.opt)

    def shared_storage_pairs(self) -> int:
        """Tensors that share storage with another block's *trainable* Parameter object."""
        seen: dict[int, list[nn.Parameter]] = {}
        for block in self.blocks:
            for module, attr, _ in _slots(block):
                p = getattr(module, attr)
                seen.setdefault(p.data_ptr(), [])
                if all(q is not p for q in seen[p.data_ptr()]):
                    seen[p.data_ptr()].append(p)
        return sum(1 for ps in seen.values() if sum(p.requires_grad for p in ps) > 1)


def count_parameters(model: nn.Module, optimizer=None) -> TyingCounts:
    """Total (every position), unique (distinct storage) and trainable parameters of a model."""
    positions: dict[tuple[int, int], bool] = {}  # (data_ptr, numel) -> trains
    total = 0
    objects: set[int] = set()
    for _name, p in model.named_parameters(remove_duplicate=False):
        key = (p.data_ptr(), p.numel())
        if id(p) in objects and _is_native_tie(model, p):
            continue  # the embedding/head tie a model is born with is not ours to count twice
        objects.add(id(p))
        total += p.numel()
        positions[key] = positions.get(key, False) or p.requires_grad
    unique = sum(k[1] for k in positions)
    trainable = sum(k[1] for k, trains in positions.items() if trains)
    state = None
    if optimizer is not None:
        state = sum(t.numel() * t.element_size() for s in optimizer.state.values()
                    for t in s.values() if torch.is_tensor(t))
    return TyingCounts(total=total, unique=unique, trainable=trainable, optimizer_state_bytes=state)


def _is_native_tie(model: nn.Module, p: nn.Parameter) -> bool:
    get_in = getattr(model, "get_input_embeddings", None)
    emb = get_in() if callable(get_in) else None
    return emb is not None and getattr(emb, "weight", None) is p


# ---- on disk ------------------------------------------------------------------------------
def tying_document(sources, num_blocks: int, form: str, blocks_path: str | None = None,
                   **extra) -> dict:
    return {"num_blocks": num_blocks, "sources": list(sources), "form": form,
            "blocks_path": blocks_path,
            "tied": {str(i): j for i, j in enumerate(sources) if i != j}, **extra}


def read_tying_file(path: str | Path, num_blocks: int | None = None) -> dict:
    """A tying.json (or any JSON with `sources`, or a bare list); refused if for another block count."""
    path = Path(path)
    if path.is_dir():  # a run directory or a tied checkpoint
        path = next((p for p in (path / TYING_FILE, path / "model" / TYING_FILE) if p.is_file()),
                    path / TYING_FILE)
    if not path.is_file():
        raise LayerwiseError(f"tying map {path} does not exist")
    try:
        doc = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LayerwiseError(f"tying map {path} is not JSON: {exc}") from None
    if isinstance(doc, list):
        doc = {"sources": doc}
    if not isinstance(doc, dict) or not isinstance(doc.get("sources"), list):
        raise LayerwiseError(f"tying map {path} has no 'sources' list (expected a tying.json "
                             "written by layerwise, or a list of each block's source)")
    declared = doc.get("num_blocks")
    if num_blocks is not None and declared is not None and declared != num_blocks:
        raise LayerwiseError(f"tying map {path} is for a {declared}-block model; this model has "
                             f"{num_blocks} blocks")
    n = num_blocks if num_blocks is not None else declared if declared is not None else len(doc["sources"])
    doc["sources"] = list(check_map(doc["sources"], n, f"tying map {path}"))
    return doc


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every position's weights as its own tensor (what plain transformers expects)."""
    out, seen = {}, set()
    for name, t in model.state_dict().items():
        out[name] = t.detach().clone() if t.data_ptr() in seen else t
        seen.add(t.data_ptr())
    return out


def save_tied(model: nn.Module, tokenizer, dest: str | Path, sources, compact: bool = False,
              **extra) -> Path:
    """An HF checkpoint of a tied model plus tying.json: full (plain HF) or compact (layerwise)."""
    from layerwise.models.arch import discover_layers

    dest = Path(dest)
    layers = discover_layers(model)
    sources = list(sources)
    if compact:
        from safetensors.torch import save_file

        dest.mkdir(parents=True, exist_ok=True)
        model.config.save_pretrained(dest)
        gen = getattr(model, "generation_config", None)
        if gen is not None:
            gen.save_pretrained(dest)
        prefix = layers.blocks_path + "."
        state = {}
        for name, t in model.state_dict().items():
            if name.startswith(prefix):
                b = int(name[len(prefix):].split(".", 1)[0])
                if sources[b] != b:
                    continue  # written once, under its source block's name
            if _head_is_tied(model, name):
                continue
            state[name] = t.detach().contiguous().clone()
        save_file(state, str(dest / COMPACT_WEIGHTS), metadata={"format": "pt"})
    else:
        type(model).save_pretrained(model, dest, state_dict=full_state_dict(model))
    if tokenizer is not None:
        tokenizer.save_pretrained(dest)
    doc = tying_document(sources, len(sources), "compact" if compact else "full",
                         blocks_path=layers.blocks_path, **extra)
    (dest / TYING_FILE).write_text(json.dumps(doc, indent=2) + "\n")
    return dest


def _head_is_tied(model: nn.Module, name: str) -> bool:
    get_out = getattr(model, "get_output_embeddings", None)
    head = get_out() if callable(get_out) else None
    return (name.endswith("lm_head.weight") and head is not None
            and head.weight is getattr(model.get_input_embeddings(), "weight", None))


def restore_tying(model: nn.Module, directory: str | Path) -> tuple[int, ...] | None:
    """If `directory` holds tying.json: re-tie the loaded model as it says (weights: see the form)."""
    from layerwise.models.arch import discover_layers

    f = Path(directory) / TYING_FILE
    if not f.is_file():
        return None
    layers = discover_layers(model)
    doc = read_tying_file(f, layers.num_blocks)
    if doc.get("form") == "compact":
        _load_compact(model, Path(directory), layers, doc["sources"])
    tied = TiedBlocks(model, layers.blocks)
    tied.apply(doc["sources"])
    return tuple(doc["sources"])


def _load_compact(model, directory: Path, layers, sources) -> None:
    from safetensors.torch import load_file

    weights = directory / COMPACT_WEIGHTS
    if not weights.is_file():
        raise LayerwiseError(f"{directory}: tying.json says compact but {COMPACT_WEIGHTS} is missing")
    state = load_file(str(weights))
    prefix = layers.blocks_path + "."
    expected = []
    for name in model.state_dict():
        if name.startswith(prefix):
            b = int(name[len(prefix):].split(".", 1)[0])
            if sources[b] != b:
                continue
        if _head_is_tied(model, name):
            continue
        expected.append(name)
    missing = [n for n in expected if n not in state]
    if missing:
        raise LayerwiseError(f"{weights}: {len(missing)} tensors missing (first: {missing[0]}); "
                             "the file is not this model's compact checkpoint")
    with torch.no_grad():
        own = model.state_dict()
        for name in expected:
            if own[name].shape != state[name].shape:
                raise LayerwiseError(f"{weights}: {name} has shape {tuple(state[name].shape)}, the "
                                     f"model's is {tuple(own[name].shape)}")
            own[name].copy_(state[name])


def detect_sources(blocks: nn.ModuleList) -> tuple[int, ...]:
    """The tying map a model holds, read from its structure (which Parameter objects are shared)."""
    firsts = [next(iter(b.parameters()), None) for b in blocks]
    out = []
    for i, p in enumerate(firsts):
        out.append(next((j for j in range(i) if p is not None and firsts[j] is p), i))
    return tuple(out)
