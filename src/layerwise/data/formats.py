"""TRL's dataset types, detected from a dataset's columns as TRL detects them, and checked.

| type | columns | standard | conversational |
|---|---|---|---|
| `language-modelling` | `text` or `messages` | `text`: a string | `messages`: a list of {role, content} |
| `prompt-only` | `prompt` | a string | a list of messages (the user turn(s)) |
| `prompt-completion` | `prompt`, `completion` | strings | lists of messages |
| `preference` | `chosen`, `rejected` (+ `prompt`: explicit, else implicit) | strings | lists of messages |
| `unpaired-preference` | `prompt`, `completion`, `label` (bool) | strings | lists of messages |

Which method takes which type is an attribute of its entry in `training/methods.py:METHODS`
(`dataset_types`), as TRL's trainers take them. Any other column is kept: TRL passes it to reward
functions, and the built-in rewards read their reference from it.

Every check here runs on the Arrow table (pyarrow.compute), not on Python rows, so a
million-row file is checked in a second: mixed types (a row without its type's columns), a
message with an unknown role or empty content, a conversation with no assistant turn.
"""

from __future__ import annotations

from dataclasses import dataclass

from layerwise.errors import LayerwiseError

ROLES = ("system", "user", "assistant", "tool")
CONVERSATIONAL_KEYS = ("messages", "prompt", "completion", "chosen", "rejected")


@dataclass(frozen=True)
class DataType:
    name: str
    needs: tuple[str, ...]  # columns that must all be present
    description: str
    completion_columns: tuple[str, ...] = ()  # conversational: these must hold an assistant turn


TYPES: dict[str, DataType] = {t.name: t for t in (
    DataType("unpaired-preference", ("prompt", "completion", "label"),
             "prompt, completion and a boolean label (desirable or not)", ("completion",)),
    DataType("preference", ("chosen", "rejected"),
             "chosen and rejected (with a prompt column: explicit prompt, else implicit)",
             ("chosen", "rejected")),
    DataType("prompt-completion", ("prompt", "completion"), "prompt and completion",
             ("completion",)),
    DataType("prompt-only", ("prompt",), "prompt"),
    DataType("language-modelling", ("text",), "text (a string)"),
    DataType("language-modelling:messages", ("messages",), "messages (a list of {role, content})",
             ("messages",)),
)}
# Detection order: the first type whose columns are all present (TRL's own order of precedence).
LM = "language-modelling"


def public_name(type_name: str) -> str:
    return LM if type_name.startswith(LM) else type_name


def needs_text() -> str:
    """What each type needs, for an error message."""
    return "; ".join(f"{public_name(t.name)}: {t.description}" for t in TYPES.values())


@dataclass(frozen=True)
class Detected:
    """A dataset's type, whether it is conversational, and the columns beyond the type's own."""

    type: str  # a key of TYPES
    conversational: bool
    extra_columns: tuple[str, ...]

    @property
    def name(self) -> str:
        return public_name(self.type)

    @property
    def columns(self) -> tuple[str, ...]:
        cols = TYPES[self.type].needs
        return (("prompt",) + cols) if self.type == "preference" and self.explicit_prompt else cols

    explicit_prompt: bool = False

    def describe(self) -> str:
        form = "conversational" if self.conversational else "standard"
        prompt = (" (explicit prompt)" if self.explicit_prompt else " (implicit prompt)"
                  ) if self.type == "preference" else ""
        return f"{self.name}{prompt}, {form}"


def detect(ds, where: str, content: bool = True) -> Detected:
    """The TRL type of `ds` from its columns, checked on every row (Arrow, no Python loop):
    the columns' types and presence always (mixed rows are found from the null counts);
    with `content`, every message (`check_rows`) too. A task checks the content of the rows
    it reads instead, so a million-row file costs no more memory than the rows it trains on."""
    columns = list(ds.column_names)
    found = next((t for t in TYPES.values() if all(c in columns for c in t.needs)), None)
    if found is None:
        raise LayerwiseError(f"{where}: columns {', '.join(columns) or 'none'} match no TRL dataset "
                             f"type; each needs: {needs_text()} (rename with --columns "
                             "prompt=question,completion=answer)")
    explicit = found.name == "preference" and "prompt" in columns
    own = set(found.needs) | ({"prompt"} if explicit else set())
    _check_present(ds, found, own, where)
    conversational = _conversational(ds, own, where)
    if found.name == "language-modelling" and conversational:
        raise LayerwiseError(f"{where}: column 'text' holds messages; a conversation goes in a "
                             "column named 'messages' (--columns messages=text)")
    if not conversational:
        _check_string_types(ds, own - {"label"}, where)
    if found.name == "unpaired-preference":
        _check_labels(ds, where)
    extra = tuple(c for c in columns if c not in own)
    detected = Detected(found.name, conversational, extra, explicit_prompt=explicit)
    if content:
        check_rows(ds, detected, where)
    return detected


def check_rows(ds, detected: Detected, where: str, index=None) -> None:
    """Every message of `ds` (roles, content, an assistant turn where one is needed), or every
    text column not empty in every row; `index[i]`: the file's row number of row i."""
    table = ds.with_format("arrow")[0:len(ds)]  # the selected rows only
    own = set(detected.columns)
    if detected.conversational:
        _check_messages(table, TYPES[detected.type], own, where, index)
    else:
        _check_empty(table, own - {"label"}, where)


def _table(ds):
    return ds.data.table if hasattr(ds.data, "table") else ds.data


def _first_null(column) -> int:
    import pyarrow.compute as pc

    return int(pc.index(pc.is_null(column), True).as_py())


def _check_present(ds, found: DataType, own: set[str], where: str) -> None:
    """Every row has its type's columns (else the file mixes types: say what the row has)."""
    table = _table(ds)
    for name in sorted(own):
        column = table.column(name)
        if column.null_count:
            row = _first_null(column)
            has = [c for c in ds.column_names if table.column(c)[row].is_valid]
            raise LayerwiseError(f"{where}: rows of mixed types: {column.null_count} of {len(ds)} "
                                 f"rows have no '{name}' (row {row} has {', '.join(has) or 'nothing'})"
                                 f"; a {public_name(found.name)} dataset needs {', '.join(found.needs)} "
                                 "in every row")


def _conversational(ds, own: set[str], where: str) -> bool:
    import pyarrow as pa

    table = _table(ds)
    kinds = {}
    for name in own & set(CONVERSATIONAL_KEYS):
        t = table.schema.field(name).type
        if pa.types.is_list(t) or pa.types.is_large_list(t):
            kinds[name] = True
        elif pa.types.is_string(t) or pa.types.is_large_string(t):
            kinds[name] = False
        else:
            raise LayerwiseError(f"{where}: column '{name}' holds {t}, not text (a string) or "
                                 "messages (a list of {role, content}); it is never converted to text")
    if len(set(kinds.values())) > 1:
        text = ", ".join(f"'{k}' {'messages' if v else 'text'}" for k, v in sorted(kinds.items()))
        raise LayerwiseError(f"{where}: mixes conversational and standard columns ({text}); TRL "
                             "needs all of them in one form")
    return any(kinds.values())


def _check_string_types(ds, names: set[str], where: str) -> None:
    import pyarrow as pa

    table = _table(ds)
    for name in sorted(names):
        t = table.schema.field(name).type
        if not (pa.types.is_string(t) or pa.types.is_large_string(t)):
            raise LayerwiseError(f"{where}: column '{name}' holds {t}, not text (a string); it is "
                                 "never converted to text (fix the data or rename another column "
                                 "with --columns)")


def _check_empty(table, names: set[str], where: str) -> None:
    import pyarrow.compute as pc

    for name in sorted(names):
        empty = pc.sum(pc.equal(pc.utf8_length(table.column(name)), 0)).as_py() or 0
        if name != "prompt" and empty == len(table):
            raise LayerwiseError(f"{where}: column '{name}' is empty in every row read")


def _check_labels(ds, where: str) -> None:
    import pyarrow as pa

    t = _table(ds).schema.field("label").type
    if not pa.types.is_boolean(t):
        raise LayerwiseError(f"{where}: column 'label' holds {t}; an unpaired-preference label is "
                             "true (desirable) or false (undesirable), a JSON boolean (CSV cells "
                             "are read as text: use .jsonl or .parquet for this type)")


def _check_messages(table, found: DataType, own: set[str], where: str, index=None) -> None:
    """Known roles, non-empty content, and an assistant turn where one is needed, on every row:
    chunk by chunk of the table (no column is copied whole into memory)."""
    import pyarrow as pa

    for name in sorted(own & set(CONVERSATIONAL_KEYS)):
        column = table.column(name)
        item = column.type.value_type
        if not pa.types.is_struct(item) or not {"role", "content"} <= {f.name for f in item}:
            raise LayerwiseError(f"{where}: column '{name}' holds {column.type}; a message is an "
                                 "object with 'role' and 'content'")
        offset = 0
        for chunk in column.chunks:
            _check_chunk(chunk, offset, name, name in found.completion_columns, where, index)
            offset += len(chunk)


def _check_chunk(chunk, offset: int, name: str, needs_assistant: bool, where: str,
                 index=None) -> None:
    import pyarrow as pa
    import pyarrow.compute as pc

    if len(chunk) == 0:
        return

    def at(r: int) -> int:  # the row's number in the file (rows a run selected: via `index`)
        return int(index[offset + r]) if index is not None else offset + r

    lengths = pc.list_value_length(chunk)
    if pc.min(lengths).as_py() == 0:
        row = int(pc.index(pc.equal(lengths, 0), 0).as_py())
        raise LayerwiseError(f"{where}: row {at(row)}: '{name}' holds no message")
    messages = pc.list_flatten(chunk)
    parents = pc.list_parent_indices(chunk)
    roles = pc.struct_field(messages, "role")
    content = pc.struct_field(messages, "content")
    bad_role = pc.or_kleene(pc.invert(pc.is_in(roles, value_set=pa.array(ROLES))), pc.is_null(roles))
    if pc.any(bad_role).as_py():
        i = int(pc.index(bad_role, True).as_py())
        raise LayerwiseError(f"{where}: row {at(parents[i].as_py())}: a message in '{name}' has "
                             f"role {roles[i].as_py()!r}; roles are {', '.join(ROLES)}")
    if not (pa.types.is_string(content.type) or pa.types.is_large_string(content.type)):
        raise LayerwiseError(f"{where}: '{name}' message content holds {content.type}, not text")
    empty = pc.or_kleene(pc.is_null(content), pc.equal(pc.utf8_length(content), 0))
    if pc.any(empty).as_py():
        i = int(pc.index(empty, True).as_py())
        row = parents[i].as_py()
        first = int(pc.index(parents, row).as_py())
        raise LayerwiseError(f"{where}: row {at(row)}: message {i - first} "
                             f"({roles[i].as_py()}) in '{name}' has empty content")
    if needs_assistant:
        with_turn = pc.unique(pc.filter(parents, pc.equal(roles, "assistant")))
        if len(with_turn) < len(chunk):
            have = set(with_turn.to_pylist())
            row = next(r for r in range(len(chunk)) if r not in have)
            raise LayerwiseError(f"{where}: row {at(row)}: '{name}' has no assistant turn "
                                 f"(roles {', '.join(m['role'] for m in chunk[row].as_py())}); "
                                 "the model is trained on what the assistant says")
