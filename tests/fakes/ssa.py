"""Server-side apply (field management) as the Kubernetes API server does it, for a fake API server.

A standalone model, written from these sources (read, not copied):

- Kubernetes docs, "Server-Side Apply"
  (https://kubernetes.io/docs/reference/using-api/server-side-apply/), cited below as
  [doc: <section>].
- sigs.k8s.io/structured-merge-diff/v6 ("SMD"), cited as [SMD <file>]: merge/update.go
  (Updater.Apply, Updater.Update, update, prune, addBackOwnedItems, addBackDanglingItems),
  typed/tofieldset.go, typed/compare.go, typed/merge.go, typed/remove.go, typed/helpers.go
  (list item keys), typed/parser.go (the "deduced" type), fieldpath/set.go
  (EnsureNamedFieldsAreMembers), fieldpath/serialize*.go (FieldsV1), fieldpath/element.go
  (path text), merge/conflict.go.
- The apiserver's field manager wrapping SMD (k8s.io/apimachinery/pkg/util/managedfields/internal),
  cited as [apiserver <file>]: stripmeta.go, managedfieldsupdater.go, buildmanagerinfo.go,
  managedfields.go (manager identifiers, entry order), conflict.go (the 409 message),
  fieldmanager.go (managedFields in the request body).

Model in one paragraph: every manager owns a *set of field paths*. A path is a tuple of path
elements: ("f", name) for a struct field or map key, ("k", ((key, json), ...)) for an item of a
list-map, ("v", json) for an item of a set (and ("i", n), only ever parsed, never produced).
Apply makes the applier's set exactly the paths of its config, merges the config into the live
object, removes what the applier dropped and nobody else owns, and raises a conflict for every
path another manager owns whose value changes. Update (PUT, and non-apply PATCH) never conflicts:
whatever it changed becomes its own and is taken away from everyone else.

Choices where the model simplifies, each for a stated reason:
- One API version: no conversion between versions (the fake serves one), so Update entries are
  keyed by manager + operation only in practice.
- No cap of 10 Update managers ("ancient-changes"): it needs real timestamps to pick the oldest.
- No CRD defaulting: a field its last owner drops is deleted, never reset to its default (the
  fake's admission may default). Defaults *are* used for list-map keys, as SMD does.
- No schema-change reconciliation (the schema is fixed for a TypeInfo).
- Writes to the status subresource are not modelled: status is kept out of main-resource writes.
- A container emptied by pruning is dropped (SMD leaves a null that CRD handling then prunes);
  a null in a body is otherwise an ordinary leaf value, as in SMD.
- Undeclared fields are pruned from bodies (CRD structural pruning), not rejected.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any, NamedTuple

__all__ = [
    "BadRequest",
    "Conflict",
    "Invalid",
    "TypeInfo",
    "V",
    "apply",
    "managed_fields",
    "merge_patch",
    "owned",
    "owners",
    "path_text",
    "update",
]


# ---------------------------------------------------------------------------------- errors


class Conflict(Exception):
    """409 Conflict: an apply would change fields that other managers own.

    `.conflicts` is [(manager, field path text)], e.g. ("ray-app", ".spec.serveConfigV2");
    `.causes` one FieldManagerConflict cause per field; `.status` the Status body the API server
    sends [apiserver conflict.go NewConflictError].
    """

    code = 409

    def __init__(self, conflicts: list[tuple[str, str]], message: str, causes: list[dict]):
        super().__init__(message)
        self.conflicts = conflicts
        self.message = message
        self.causes = causes
        self.status: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": "Conflict",
            "details": {"causes": causes},
            "code": 409,
        }


class Invalid(Exception):
    """422 for a body SMD cannot type: a list-map item without any key field, a duplicate
    list-map key or set item in an apply config, a map inside a set [SMD typed/helpers.go]."""

    code = 422
    reason = "Invalid"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message
        self.status: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": self.reason,
            "code": self.code,
        }


class BadRequest(Invalid):
    """400: an apply body that carries metadata.managedFields [apiserver fieldmanager.go:
    "metadata.managedFields must be nil"]. A subclass of Invalid so one except catches both."""

    code = 400
    reason = "BadRequest"


# ----------------------------------------------------------------------------------- types
#
# SMD's schema has three atoms: scalar, list (atomic | associative set | associative map with
# keys) and map (a struct when it has named fields; a map when it has an element type; atomic or
# granular). "Deduced" is SMD's type for untyped values [SMD typed/parser.go
# DeducedParseableType]: a dict is a granular map whose values are deduced again, a list is
# atomic, anything else a scalar. We use it for x-kubernetes-preserve-unknown-fields and schemaless
# places, so unknown maps merge key by key and unknown lists are replaced whole -- what the API
# server itself does for such fields [SMD merge/preserve_unknown_test.go, merge/deduced_test.go].


class _Scalar:
    def __repr__(self) -> str:
        return "scalar"


class _Deduced:
    def __repr__(self) -> str:
        return "deduced"


SCALAR, DEDUCED = _Scalar(), _Deduced()


@dataclass(eq=False)
class _Map:
    fields: dict[str, Any] = field(default_factory=dict)  # named fields -> type
    elem: Any = None  # type of any other key; None: keys outside `fields` are pruned
    atomic: bool = False  # x-kubernetes-map-type: atomic -> the whole map is one leaf
    defaults: dict[str, Any] = field(default_factory=dict)  # field defaults (list-map keys)


@dataclass(eq=False)
class _List:
    kind: str  # "atomic" | "set" | "map"
    keys: tuple[str, ...]
    elem: Any


_DEDUCED_MAP = _Map(elem=DEDUCED)
_DEDUCED_LIST = _List("atomic", (), DEDUCED)


def _object_meta() -> _Map:
    """ObjectMeta as the API server types it (CRD schemas only say `metadata: {type: object}`):
    labels/annotations granular maps, finalizers `+listType=set`, ownerReferences
    `+listType=map +listMapKey=uid`, managedFields atomic, the rest scalars (k8s.io/apimachinery
    meta/v1 types.go markers)."""
    s = SCALAR
    owner_ref = _Map(
        {k: s for k in ("apiVersion", "kind", "name", "uid", "controller", "blockOwnerDeletion")}
    )
    return _Map(
        {
            **{
                k: s
                for k in (
                    "name",
                    "generateName",
                    "namespace",
                    "selfLink",
                    "uid",
                    "resourceVersion",
                    "generation",
                    "creationTimestamp",
                    "deletionTimestamp",
                    "deletionGracePeriodSeconds",
                )
            },
            "labels": _Map(elem=s),
            "annotations": _Map(elem=s),
            "finalizers": _List("set", (), s),
            "ownerReferences": _List("map", ("uid",), owner_ref),
            "managedFields": _List("atomic", (), DEDUCED),
        }
    )


def _convert(s: dict) -> Any:
    """One openAPIV3Schema node -> SMD atom, by the rules the API server uses for CRDs
    [doc: Merge strategy; doc: Custom resources]: arrays are atomic unless
    x-kubernetes-list-type says set or map; objects with properties are granular structs unless
    x-kubernetes-map-type: atomic; additionalProperties maps are granular by key."""
    if not isinstance(s, dict):
        return DEDUCED
    if s.get("x-kubernetes-int-or-string"):
        return SCALAR
    kind = s.get("type")
    if kind == "array":
        list_type = s.get("x-kubernetes-list-type", "atomic")  # CRD default: atomic
        keys = tuple(s.get("x-kubernetes-list-map-keys") or ()) if list_type == "map" else ()
        return _List(list_type, keys, _convert(s.get("items") or {}))
    if kind == "object" or "properties" in s or "additionalProperties" in s:
        props = s.get("properties") or {}
        extra = s.get("additionalProperties")
        if isinstance(extra, dict):
            elem = _convert(extra)
        elif extra is True or s.get("x-kubernetes-preserve-unknown-fields"):
            elem = DEDUCED
        else:
            elem = None  # structural pruning drops undeclared fields (CRD docs, "Field pruning")
        return _Map(
            {k: _convert(v) for k, v in props.items()},
            elem,
            s.get("x-kubernetes-map-type") == "atomic",
            {k: v["default"] for k, v in props.items() if isinstance(v, dict) and "default" in v},
        )
    if kind in ("string", "integer", "number", "boolean"):
        return SCALAR
    return DEDUCED  # no type: x-kubernetes-preserve-unknown-fields (or an empty schema)


class TypeInfo:
    """How to merge at each path of one kind of object."""

    def __init__(self, root: _Map, status_subresource: bool = True):
        self.root = root
        # With the status subresource on, the main resource's strategy resets status to the live
        # value and the field manager ignores it (CRD strategy ResetFields = {"status"}).
        self.status_subresource = status_subresource

    @classmethod
    def from_crd_schema(cls, schema: dict, status_subresource: bool = True) -> TypeInfo:
        """From a CRD version's `schema.openAPIV3Schema`. `metadata` always gets ObjectMeta's
        rules, as the API server splices the real ObjectMeta into every CRD's type."""
        root = _convert(schema)
        if not isinstance(root, _Map):
            root = _Map(elem=DEDUCED)
        fields = {"apiVersion": SCALAR, "kind": SCALAR, **root.fields, "metadata": _object_meta()}
        return cls(_Map(fields, root.elem, False, root.defaults), status_subresource)

    @classmethod
    def deduced(cls, status_subresource: bool = False) -> TypeInfo:
        """For a schemaless object (say a ConfigMap): maps granular, lists atomic."""
        root = _Map({"apiVersion": SCALAR, "kind": SCALAR, "metadata": _object_meta()}, DEDUCED)
        return cls(root, status_subresource)


def _atom(node: Any, v: Any) -> Any:
    """The atom that describes `v` at a node: a deduced node takes its shape from the value."""
    if node is DEDUCED:
        if isinstance(v, dict):
            return _DEDUCED_MAP
        return _DEDUCED_LIST if isinstance(v, list) else SCALAR
    return node


def _child(m: _Map, key: str) -> Any:
    return m.fields.get(key) or m.elem or DEDUCED


def _granular(atom: Any) -> bool:
    if isinstance(atom, _Map):
        return not atom.atomic
    return isinstance(atom, _List) and atom.kind != "atomic"


# ------------------------------------------------------------------------------- path elements


class V(NamedTuple):
    """A set item in a path given to `owners`: ("metadata", "finalizers", V("x"))."""

    value: Any


def _canon(v: Any) -> str:
    return json.dumps(v, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _go_json(text: str) -> str:
    """json-iterator's ConfigCompatibleWithStandardLibrary (what SMD serializes FieldsV1 with)
    escapes these inside JSON values, as Go's encoding/json does; so do we, for `k:`/`v:` keys
    to match the API server's byte for byte."""
    for ch, esc in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(ch, esc)
    return text


def _key_pe(pairs: dict) -> tuple:
    # The key fields sorted by name [SMD fieldpath/serialize-pe.go: fields.Sort()].
    return ("k", tuple(sorted((k, _canon(v)) for k, v in pairs.items())))


def _pe_text(pe: tuple) -> str:
    """FieldsV1 key of a path element [SMD fieldpath/serialize-pe.go]."""
    kind, x = pe
    if kind == "f":
        return "f:" + x  # written raw, not as JSON
    if kind == "k":  # names via WriteObjectField (not HTML-escaped), values via WriteVal (are)
        return (
            "k:{"
            + ",".join(f"{json.dumps(n, ensure_ascii=False)}:{_go_json(v)}" for n, v in x)
            + "}"
        )
    if kind == "v":
        return "v:" + _go_json(x)
    return f"i:{x}"


def _parse_pe(text: str) -> tuple:
    kind, _, body = text.partition(":")
    if kind == "f":
        return ("f", body)
    if kind == "k":
        return _key_pe(json.loads(body))
    if kind == "v":
        return ("v", _canon(json.loads(body)))
    return ("i", int(body))


def _pe_order(pe: tuple) -> tuple:
    # Fields before keys before values before indices [SMD fieldpath/element.go Compare].
    return ("fkvi".index(pe[0]), pe[1] if pe[0] != "i" else f"{pe[1]:020d}")


def path_text(path: tuple) -> str:
    """`.spec.containers[name="x"].image`, the text the API server puts in conflicts
    [SMD fieldpath/element.go PathElement.String]."""
    out = []
    for kind, x in path:
        if kind == "f":
            out.append("." + x)
        elif kind == "k":
            out.append("[" + ",".join(f"{n}={v}" for n, v in x) + "]")
        elif kind == "v":
            out.append(f"[={x}]")
        else:
            out.append(f"[{x}]")
    return "".join(out)


def _item_pe(lst: _List, item: Any, path: tuple, index: int) -> tuple:
    """The path element of a list item [SMD typed/helpers.go listItemToPathElement]."""
    where = f"{path_text(path) or '.'}: element {index}: "
    if lst.keys:
        if not isinstance(item, dict):
            raise Invalid(where + "associative list with keys may not have non-map elements")
        elem = lst.elem if isinstance(lst.elem, _Map) else _Map()
        pairs = {}
        for key in lst.keys:
            if key in item:
                pairs[key] = item[key]
            elif key in elem.defaults:  # a key field left out takes its schema default
                pairs[key] = elem.defaults[key]
        if not pairs:
            raise Invalid(
                where + f"associative list with keys has an element that omits all key "
                f"fields {json.dumps(list(lst.keys))} (and doesn't have default "
                f"values for any key fields)"
            )
        return _key_pe(pairs)
    if isinstance(item, (dict, list)) or item is None:
        raise Invalid(
            where
            + "associative list without keys has an element that's a "
            + ("map type" if isinstance(item, dict) else "list or null")
        )
    return ("v", _canon(item))


def _group(lst: _List, items: list, path: tuple) -> dict[tuple, list]:
    groups: dict[tuple, list] = {}
    for i, item in enumerate(items):
        groups.setdefault(_item_pe(lst, item, path, i), []).append(item)
    return groups


# -------------------------------------------------------------------- values (SMD typed/*.go)

_ABSENT = object()  # "no such field" -- distinct from a JSON null (None)


def _equal(a: Any, b: Any) -> bool:
    """JSON equality: True is not 1, 1 is 1.0 [SMD value.Equals]."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(map(_equal, a, b))
    return type(a) is type(b) and a == b


def _is_leaf(atom: Any, *values: Any) -> bool:
    """Scalars and atomic lists/maps are leaves; so is a granular container empty on both sides
    ("emptyPromoteToLeaf" in SMD typed/compare.go and merge.go keeps {} vs absent apart)."""
    if not _granular(atom):
        return True
    kind = dict if isinstance(atom, _Map) else list
    return not any(isinstance(v, kind) and v for v in values)


def _to_set(v: Any, node: Any, path: tuple, out: set) -> None:
    """The paths a value sets [SMD typed/tofieldset.go]: leaves, list items (an item is owned
    by itself as well as through its fields), map keys (not struct fields: those are owned
    through their children, unless null or {})."""
    atom = _atom(node, v)
    if not _granular(atom):
        out.add(path)
    elif isinstance(atom, _Map) and isinstance(v, dict):
        for k, cv in v.items():
            p = (*path, ("f", k))
            _to_set(cv, _child(atom, k), p, out)
            if cv is None or cv == {} or k not in atom.fields:
                out.add(p)
    elif isinstance(atom, _List) and isinstance(v, list):
        for pe, items in _group(atom, v, path).items():
            if len(items) == 1:  # duplicates are owned as one leaf, not descended into
                _to_set(items[0], atom.elem, (*path, pe), out)
            out.add((*path, pe))


def _compare(lhs: Any, rhs: Any, node: Any, path: tuple, diff: tuple[set, set, set]) -> None:
    """Fill diff = (added, modified, removed) going from lhs to rhs [SMD typed/compare.go].
    Granular containers that appear or vanish are added/removed themselves as well as their
    contents; leaves are modified when their values differ."""
    added, modified, removed = diff
    la = _atom(node, lhs) if lhs is not _ABSENT else None
    ra = _atom(node, rhs) if rhs is not _ABSENT else None
    if la is not None and ra is not None and la is not ra:
        # A deduced value changed shape (map <-> list <-> scalar): each side is walked alone.
        modified.add(path)
        if not _is_leaf(la, lhs):
            _compare_items(la, lhs, _ABSENT, path, diff)
        if not _is_leaf(ra, rhs):
            _compare_items(ra, _ABSENT, rhs, path, diff)
        return
    atom = ra or la
    if _is_leaf(atom, lhs, rhs):
        if lhs is _ABSENT:
            added.add(path)
        elif rhs is _ABSENT:
            removed.add(path)
        elif not _equal(lhs, rhs):
            modified.add(path)
        return
    _compare_items(atom, lhs, rhs, path, diff)
    if lhs is _ABSENT:
        added.add(path)
    elif rhs is _ABSENT:
        removed.add(path)


def _compare_items(atom: Any, lhs: Any, rhs: Any, path: tuple, diff: tuple) -> None:
    if isinstance(atom, _Map):
        lm = lhs if isinstance(lhs, dict) else {}
        rm = rhs if isinstance(rhs, dict) else {}
        for k in {**lm, **rm}:
            _compare(
                lm.get(k, _ABSENT), rm.get(k, _ABSENT), _child(atom, k), (*path, ("f", k)), diff
            )
        return
    lg = _group(atom, lhs if isinstance(lhs, list) else [], path)
    rg = _group(atom, rhs if isinstance(rhs, list) else [], path)
    added, modified, removed = diff
    for pe in {**lg, **rg}:
        li, ri, p = lg.get(pe, []), rg.get(pe, []), (*path, pe)
        if len(li) <= 1 and len(ri) <= 1:
            _compare(li[0] if li else _ABSENT, ri[0] if ri else _ABSENT, atom.elem, p, diff)
        elif len(li) > 1 and len(ri) > 1:  # duplicates on both sides: one atomic leaf
            if not _equal(li, ri):
                modified.add(p)
        elif len(li) > 1:
            if ri:
                _compare(_ABSENT, ri[0], atom.elem, p, diff)
            removed.add(p)
        else:
            if li:
                _compare(li[0], _ABSENT, atom.elem, p, diff)
            added.add(p)


def _diff(lhs: dict, rhs: dict, root: _Map) -> tuple[set, set, set]:
    diff: tuple[set, set, set] = (set(), set(), set())
    _compare(lhs, rhs, root, (), diff)
    return diff


def _merge(lhs: Any, rhs: Any, node: Any) -> Any:
    """Merge an apply config (rhs) into the live value (lhs) [SMD typed/merge.go]: the config's
    leaves win, granular maps merge key by key, granular lists item by item."""
    if rhs is _ABSENT:
        return lhs
    if lhs is _ABSENT:
        return rhs
    la, ra = _atom(node, lhs), _atom(node, rhs)
    if la is not ra or _is_leaf(ra, lhs, rhs):
        return rhs
    if isinstance(ra, _Map):
        lm = lhs if isinstance(lhs, dict) else {}
        rm = rhs if isinstance(rhs, dict) else {}
        return {
            k: _merge(lm.get(k, _ABSENT), rm.get(k, _ABSENT), _child(ra, k)) for k in {**lm, **rm}
        }
    return _merge_items(
        ra, lhs if isinstance(lhs, list) else [], rhs if isinstance(rhs, list) else []
    )


def _merge_items(lst: _List, lhs: list, rhs: list) -> list:
    """Item order as SMD's visitListItems: the config's items in the config's order, live items
    the config does not mention stay where they were relative to them."""
    lpes = [(_item_pe(lst, it, (), i), it) for i, it in enumerate(lhs)]
    rpes = [(_item_pe(lst, it, (), i), it) for i, it in enumerate(rhs)]
    live: dict[tuple, Any] = {}
    for pe, it in lpes:
        live[pe] = None if pe in live else it  # a duplicated live item is not merged into
    mine = dict(rpes)
    shared = iter([pe for pe, _ in rpes if pe in live])
    next_shared = next(shared, None)
    out, done, li, ri = [], set(), 0, 0
    while li < len(lpes) or ri < len(rpes):
        if li < len(lpes) and ri < len(rpes):
            pe = lpes[li][0]
            if pe == rpes[ri][0]:
                done.add(pe)
                out.append(_merge(live[pe], mine[pe], lst.elem))
                li, ri, next_shared = li + 1, ri + 1, next(shared, None)
                continue
            if pe in mine and next_shared is not None and next_shared != pe:
                li += 1  # a shared item that the config places later: emit it there
                continue
        if li < len(lpes):
            pe, item = lpes[li]
            if pe not in mine:
                out.append(item)
                li += 1
                continue
            if pe in done:
                li += 1
        if ri < len(rpes):
            pe, item = rpes[ri]
            done.add(pe)
            out.append(_merge(live.get(pe, _ABSENT), item, lst.elem))
            ri += 1
            if next_shared == pe:
                next_shared = next(shared, None)
    return out


def _remove(v: Any, node: Any, path: tuple, kill: set, under: set) -> Any:
    """Drop every subtree whose path is in `kill` [SMD typed/remove.go]. A container emptied by
    the removal goes too: SMD leaves a null there, which the API server's CRD handling prunes
    (null is only kept for `nullable` fields) -- so a GET never shows it."""
    atom = _atom(node, v)
    if isinstance(atom, _Map) and not atom.atomic and isinstance(v, dict):
        out = {}
        for k, cv in v.items():
            p = (*path, ("f", k))
            if p in kill:
                continue
            if p in under:
                cv = _remove(cv, _child(atom, k), p, kill, under)
                if cv is _ABSENT:
                    continue
            out[k] = cv
        return out or _ABSENT
    if isinstance(atom, _List) and atom.kind != "atomic" and isinstance(v, list):
        out_items = []
        for i, item in enumerate(v):
            p = (*path, _item_pe(atom, item, path, i))
            if p in kill:
                continue
            if p in under:
                item = _remove(item, atom.elem, p, kill, under)
                if item is _ABSENT:
                    continue
            out_items.append(item)
        return out_items or _ABSENT
    return v


def _remove_paths(obj: dict, root: _Map, kill: set) -> dict:
    under = {p[:i] for p in kill for i in range(1, len(p))}
    out = _remove(obj, root, (), kill, under)
    return {} if out is _ABSENT else out


def _set_of(obj: dict, root: _Map) -> set:
    out: set = set()
    _to_set(obj, root, (), out)
    return out


def _named(paths: set, root: _Map) -> set:
    """Add every struct field that is an ancestor of a path [SMD fieldpath/set.go
    EnsureNamedFieldsAreMembers]: owning .spec.x counts as owning .spec for pruning's sake, but
    owning a map key or list item does not own the map or list."""
    types: dict[tuple, Any] = {(): root}

    def type_at(prefix: tuple) -> Any:
        if prefix not in types:
            parent, pe = type_at(prefix[:-1]), prefix[-1]
            if isinstance(parent, _Map) and pe[0] == "f":
                types[prefix] = _child(parent, pe[1])
            else:
                types[prefix] = parent.elem if isinstance(parent, _List) else DEDUCED
        return types[prefix]

    out = set(paths)
    for p in paths:
        for i in range(1, len(p)):
            parent, pe = type_at(p[: i - 1]), p[i - 1]
            if pe[0] == "f" and isinstance(parent, _Map) and pe[1] in parent.fields:
                out.add(p[:i])
    return out


# ------------------------------------------------------------------------- managers and entries

# Never owned by anyone [apiserver stripmeta.go]: removed from the acting manager's set after
# every operation. Exact paths: `metadata` itself, not what is under it.
_STRIPPED = {(("f", "apiVersion"),), (("f", "kind"),), (("f", "metadata"),)} | {
    (("f", "metadata"), ("f", k))
    for k in (
        "name",
        "namespace",
        "creationTimestamp",
        "selfLink",
        "uid",
        "clusterName",
        "generation",
        "managedFields",
        "resourceVersion",
    )
}

# Metadata the API server sets itself and keeps from the stored object whatever a write says
# (rest.BeforeUpdate; resourceVersion/uid in a body are preconditions, the fake checks them).
_SYSTEM_META = (
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
)


@dataclass
class _Entry:
    manager: str
    operation: str
    api_version: str
    paths: set
    subresource: str = ""
    time: str | None = None

    @property
    def key(self) -> tuple:
        # One entry per identifier; Apply identifiers leave the API version out, so an applier
        # keeps one entry across versions [apiserver managedfields.go BuildManagerIdentifier].
        version = self.api_version if self.operation != "Apply" else ""
        return (self.manager, self.operation, version, self.subresource)

    def printed(self) -> str:
        # [apiserver conflict.go printManager]
        text = json.dumps(self.manager)
        if self.subresource:
            text += f" with subresource {json.dumps(self.subresource)}"
        if self.operation == "Update":
            text += f" using {self.api_version}" + (f" at {self.time}" if self.time else "")
        return text


def _decode_fields(fields: dict, prefix: tuple = ()) -> set:
    out: set = set()
    for text, sub in (fields or {}).items():
        if text == ".":
            out.add(prefix)
            continue
        p = (*prefix, _parse_pe(text))
        if sub:
            out |= _decode_fields(sub, p)
        else:
            out.add(p)
    return out


def _encode_fields(paths: set) -> dict:
    """A set of paths as FieldsV1 [SMD fieldpath/serialize.go]: a member with no children is
    `{}`; a member that also has children gets `".": {}` among them."""
    trie: dict = {}
    members: set = set()
    for p in paths:
        node = trie
        for pe in p:
            node = node.setdefault(pe, {})
        members.add(p)

    def emit(node: dict, prefix: tuple) -> dict:
        out = {}
        for pe in sorted(node, key=_pe_order):
            p, sub = (*prefix, pe), node[pe]
            if sub:
                out[_pe_text(pe)] = {**({".": {}} if p in members else {}), **emit(sub, p)}
            else:
                out[_pe_text(pe)] = {}
        return out

    return emit(trie, ())


def _decode(entries: list | None) -> dict[tuple, _Entry]:
    out = {}
    for e in entries or []:
        entry = _Entry(
            e.get("manager", ""),
            e.get("operation", ""),
            e.get("apiVersion", ""),
            _decode_fields(e.get("fieldsV1") or {}),
            e.get("subresource", ""),
            e.get("time"),
        )
        out[entry.key] = entry
    return out


def _encode(managers: dict[tuple, _Entry]) -> list[dict]:
    """Entries in the API server's order: Apply before Update, then by time, manager, version,
    subresource [apiserver managedfields.go sortEncodedManagedFields]."""
    ordered = sorted(
        managers.values(),
        key=lambda e: (e.operation, e.time or "", e.manager, e.api_version, e.subresource),
    )
    out = []
    for e in ordered:
        entry: dict[str, Any] = {
            "manager": e.manager,
            "operation": e.operation,
            "apiVersion": e.api_version,
        }
        if e.time:
            entry["time"] = e.time
        entry["fieldsType"] = "FieldsV1"
        entry["fieldsV1"] = _encode_fields(e.paths)
        if e.subresource:
            entry["subresource"] = e.subresource
        out.append(entry)
    return out


def _settle(old: dict, new: dict, managers: dict, acting: Any, force: bool, root: _Map) -> tuple:
    """[SMD merge/update.go Updater.update]: every *other* manager that owns a field the write
    adds or changes is in conflict (unless forced, when it loses the field); every manager loses
    the fields the write removes; managers left with nothing disappear."""
    added, modified, removed = _diff(old, new, root)
    touched = added | modified
    conflicts = {
        k: e.paths & touched for k, e in managers.items() if k != acting and e.paths & touched
    }
    if conflicts and not force:
        raise _conflict_error(managers, conflicts)
    for k, e in managers.items():
        if k != acting:
            e.paths = e.paths - conflicts.get(k, set()) - removed
    for k in [k for k, e in managers.items() if not e.paths]:
        del managers[k]
    return added, modified, removed


def _conflict_error(managers: dict, conflicts: dict) -> Conflict:
    """The 409 as the API server words it [apiserver conflict.go getConflictMessage]."""
    rows = [
        (managers[k], p)
        for k in sorted(conflicts)
        for p in sorted(conflicts[k], key=lambda p: [_pe_order(pe) for pe in p])
    ]
    if len(rows) == 1:
        e, p = rows[0]
        message = f"Apply failed with 1 conflict: conflict with {e.printed()}: {path_text(p)}"
    else:
        lines, last = [], None
        for e, p in rows:
            if e is not last:
                lines.append(f"conflicts with {e.printed()}:")
                last = e
            lines.append(f"- {path_text(p)}")
        message = f"Apply failed with {len(rows)} conflicts: " + "\n".join(lines)
    causes = [
        {
            "type": "FieldManagerConflict",
            "message": f"conflict with {e.printed()}",
            "field": path_text(p),
        }
        for e, p in rows
    ]
    return Conflict([(e.manager, path_text(p)) for e, p in rows], message, causes)


# ------------------------------------------------------------------------------- object plumbing


def _split(obj: dict, types: TypeInfo) -> tuple[dict, dict]:
    """The part of an object that field management sees, and the part the server keeps for
    itself: status (a subresource: reset on the main resource) and system metadata."""
    body = copy.deepcopy(obj)
    kept: dict = {}
    if types.status_subresource and "status" in body:
        kept["status"] = body.pop("status")
    meta = body.get("metadata")
    if isinstance(meta, dict):
        meta.pop("managedFields", None)
        kept["metadata"] = {k: meta.pop(k) for k in _SYSTEM_META if k in meta}
    return body, kept


def _prune_unknown(v: Any, node: Any) -> Any:
    """CRD structural pruning: fields the schema does not declare are dropped from what is
    written (kept under x-kubernetes-preserve-unknown-fields) -- the API server does this while
    decoding the request, before field management sees it."""
    atom = _atom(node, v)
    if isinstance(atom, _Map) and isinstance(v, dict):
        return {
            k: _prune_unknown(cv, _child(atom, k))
            for k, cv in v.items()
            if k in atom.fields or atom.elem is not None
        }
    if isinstance(atom, _List) and isinstance(v, list):
        return [_prune_unknown(item, atom.elem) for item in v]
    return v


def _check(v: Any, node: Any, path: tuple, strict: bool) -> None:
    """Type the body the way SMD must before it can merge it: list items need their keys; an
    apply config may not repeat a key or set item [SMD typed/merge.go indexListPathElements:
    "duplicate entries for key"] (a live object or an update may, and SMD tolerates it)."""
    atom = _atom(node, v)
    if isinstance(atom, _Map) and isinstance(v, dict):
        for k, cv in v.items():
            _check(cv, _child(atom, k), (*path, ("f", k)), strict)
    elif isinstance(atom, _List) and isinstance(v, list) and atom.kind != "atomic":
        seen = set()
        for i, item in enumerate(v):
            pe = _item_pe(atom, item, path, i)
            if strict and pe in seen:
                raise Invalid(f"{path_text(path)}: duplicate entries for key {path_text((pe,))}")
            seen.add(pe)
            _check(item, atom.elem, (*path, pe), strict)


def _prepare(obj: dict, types: TypeInfo, strict: bool) -> tuple[dict, dict]:
    body, kept = _split(obj, types)
    body = _prune_unknown(body, types.root)
    try:
        _check(body, types.root, (), strict)
    except Invalid as err:
        what = "patch" if strict else "new"  # the apiserver's words for an apply / an update
        raise Invalid(f"failed to create typed {what} object: {err.message}") from None
    return body, kept


def _assemble(body: dict, kept: dict, managers: dict) -> dict:
    out = body
    meta = out.setdefault("metadata", {})
    meta.update(copy.deepcopy(kept.get("metadata", {})))
    if managers:
        meta["managedFields"] = _encode(managers)
    if "status" in kept:
        out["status"] = copy.deepcopy(kept["status"])
    return out


def _version(*objs: dict | None) -> str:
    return next((o["apiVersion"] for o in objs if o and o.get("apiVersion")), "")


# ------------------------------------------------------------------------------- operations


def apply(
    live: dict | None,
    config: dict,
    manager: str,
    types: TypeInfo,
    force: bool = False,
    *,
    now: str | None = None,
) -> dict:
    """Server-side apply of `config` by `manager` onto `live` (None: create) [SMD merge/update.go
    Updater.Apply, under the apiserver's field manager]. Returns the object to store, with
    metadata.managedFields; raises Conflict (409), Invalid (422) or BadRequest (400).

    `now` (an RFC 3339 string), if given, stamps the applier's entry when the object changed
    [apiserver managedfieldsupdater.go]; without it entries carry no `time`.
    """
    if (config.get("metadata") or {}).get("managedFields") is not None:
        raise BadRequest("metadata.managedFields must be nil")
    root = types.root
    live = live or {}
    live_body, kept = _split(live, types)
    cfg_body, cfg_kept = _prepare(config, types, strict=True)
    if not live:  # create: the server-set metadata comes with the request, if at all
        kept = {"metadata": cfg_kept.get("metadata", {})}
    # The URL names the object and the API server refuses a body that disagrees, so real bodies
    # carry name/namespace; supply them when a caller leaves them out, else pruning could take
    # the whole of metadata away (they are never owned: stripmeta).
    live_meta, cfg_meta = live.get("metadata") or {}, cfg_body.setdefault("metadata", {})
    for k in ("name", "namespace"):
        if k not in cfg_meta and k in live_meta:
            cfg_meta[k] = live_meta[k]
    managers = _decode(live_meta.get("managedFields"))

    me = _Entry(manager, "Apply", _version(config, live), _set_of(cfg_body, root))
    previous = managers.get(me.key)
    # The applier's set becomes exactly what its config names [doc: Field management].
    managers[me.key] = me
    merged = _merge(live_body, cfg_body, root)
    if previous and previous.paths:
        merged = _prune(merged, managers, previous.paths, root)
    _settle(live_body, merged, managers, me.key, force, root)
    me.paths -= _STRIPPED
    if not me.paths:
        managers.pop(me.key, None)
    stamp = now and not _equal(live_body, merged)
    me.time = now if stamp else (previous.time if previous else None)
    return _assemble(merged, kept, managers)


def _prune(merged: dict, managers: dict, last: set, root: _Map) -> dict:
    """Remove what the applier owned last time, no longer applies, and nobody else owns
    [SMD merge/update.go prune + addBackOwnedItems + addBackDanglingItems; doc: Field
    management, "If you remove a field from a manifest and apply that manifest ..."].

    Three steps, as SMD: (1) cut everything in the applier's previous set (with the struct
    fields above it) out of the merged object; (2) put back what any manager -- the applier's new
    config included, Update managers included -- still owns; (3) of what is still missing, put
    back all that the applier did not own before (fields nobody owns are not its to delete).
    """
    last_n = _named(last, root)
    merged_n = _named(_set_of(merged, root), root)
    owned_n = _named(set().union(*(e.paths for e in managers.values())), root)
    cut = _remove_paths(merged, root, last_n)
    back = _remove_paths(merged, root, merged_n - (_named(_set_of(cut, root), root) | owned_n))
    return _remove_paths(merged, root, (merged_n - _named(_set_of(back, root), root)) & last_n)


def update(
    live: dict | None,
    new: dict,
    manager: str,
    types: TypeInfo,
    operation: str = "Update",
    *,
    now: str | None = None,
) -> dict:
    """A PUT (or the result of a non-apply PATCH) by `manager` [SMD merge/update.go
    Updater.Update via apiserver managedfieldsupdater.go]. Never conflicts: the fields it added
    or changed become the manager's and leave everyone else's set; the fields it removed leave
    every set; fields it left alone keep their owners [doc: Field management, "Whenever a
    field's value does change, ownership moves from its current manager to the manager making
    the change"].

    managedFields in `new`, when non-empty, replace the stored ones first -- how a client
    rewrites or clears them [doc: Clearing managedFields; apiserver fieldmanager.go]; an empty
    list leaves them alone.
    """
    root = types.root
    live = live or {}
    live_body, kept = _split(live, types)
    new_body, new_kept = _prepare(new, types, strict=False)
    if not live:
        kept = {"metadata": new_kept.get("metadata", {})}
    given = (new.get("metadata") or {}).get("managedFields")
    managers = _decode(given or (live.get("metadata") or {}).get("managedFields"))

    # The apiserver runs SMD's Update as a throwaway manager ("current-operation") and then folds
    # what it took into the real entry, so the manager's own old entry is treated like any other.
    added, modified, _ = _settle(live_body, new_body, managers, object(), True, root)
    taken = (added | modified) - _STRIPPED
    if taken:
        me = _Entry(manager, operation, _version(new, live), set())
        previous = managers.get(me.key)
        me.paths = taken | (previous.paths if previous else set())
        me.time = now or (previous.time if previous else None)
        managers[me.key] = me
    return _assemble(new_body, kept, managers)


def _json_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge key by key, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = _json_merge_patch(out.get(k), v)
    return out


def merge_patch(
    live: dict, patch: dict, manager: str, types: TypeInfo, *, now: str | None = None
) -> dict:
    """`kubectl patch --type merge`: RFC 7386 onto the live object, recorded as an Update."""
    return update(live, _json_merge_patch(copy.deepcopy(live), patch), manager, types, now=now)


# ------------------------------------------------------------------------------- inspection


def managed_fields(obj: dict) -> list[dict]:
    """metadata.managedFields as the API server shows it (`--show-managed-fields`)."""
    return copy.deepcopy((obj.get("metadata") or {}).get("managedFields") or [])


def _user_path(path: tuple) -> tuple:
    """("spec", "containers", {"name": "x"}, "image") or ("metadata", "finalizers", V("f"))."""
    out = []
    for part in path:
        if isinstance(part, V):
            out.append(("v", _canon(part.value)))
        elif isinstance(part, dict):
            out.append(_key_pe(part))
        else:
            out.append(("f", part))
    return tuple(out)


def owners(obj: dict, path: tuple) -> set[str]:
    """The managers whose set holds exactly this path (a leaf, a list item, a map key)."""
    p = _user_path(path)
    return {e.manager for e in _decode(managed_fields(obj)).values() if p in e.paths}


def owned(obj: dict, manager: str, operation: str = "Apply") -> set[str]:
    """The field paths one manager's entry holds, as conflict-style text (".spec.x")."""
    return {
        path_text(p)
        for e in _decode(managed_fields(obj)).values()
        if e.manager == manager and e.operation == operation
        for p in e.paths
    }
