"""The server-side apply model (`tests/fakes/ssa.py`) against Kubernetes' own rules.

Each test names what it models: a section of the Kubernetes docs page "Server-Side Apply"
(https://kubernetes.io/docs/reference/using-api/server-side-apply/, "[doc: ...]") or a case of
structured-merge-diff's tests (sigs.k8s.io/structured-merge-diff/v6, "[SMD file: case]"),
restated with RayService-shaped objects. Pure Python: no Ray, no server.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from tests.fakes import ssa
from tests.fakes.ssa import V

API = "ray.io/v1"
CRDS = Path("/work/shared/kuberay/crds")

CONTAINER = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string"},
        "image": {"type": "string"},
        "command": {"type": "array", "items": {"type": "string"}},
        "ports": {
            "type": "array",
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["containerPort", "protocol"],
            "items": {
                "type": "object",
                "properties": {
                    "containerPort": {"type": "integer"},
                    "protocol": {"type": "string", "default": "TCP"},
                    "name": {"type": "string"},
                },
            },
        },
    },
}

# A small CRD-like schema with one field of every merge strategy.
SCHEMA = {
    "type": "object",
    "properties": {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"type": "object"},
        "spec": {
            "type": "object",
            "properties": {
                "serveConfigV2": {"type": "string"},
                "suspend": {"type": "boolean"},
                "args": {"type": "array", "items": {"type": "string"}},  # no list type: atomic
                "tags": {
                    "type": "array",
                    "items": {"type": "string"},
                    "x-kubernetes-list-type": "set",
                },
                "env": {"type": "object", "additionalProperties": {"type": "string"}},
                "selector": {
                    "type": "object",
                    "additionalProperties": {"type": "string"},
                    "x-kubernetes-map-type": "atomic",
                },
                "containers": {
                    "type": "array",
                    "x-kubernetes-list-type": "map",
                    "x-kubernetes-list-map-keys": ["name"],
                    "items": CONTAINER,
                },
                "rayClusterConfig": {
                    "type": "object",
                    "properties": {
                        "rayVersion": {"type": "string"},
                        "headGroupSpec": {
                            "type": "object",
                            "properties": {
                                "rayStartParams": {
                                    "type": "object",
                                    "additionalProperties": {"type": "string"},
                                },
                            },
                        },
                    },
                },
                "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
            },
        },
        "status": {"type": "object", "properties": {"serviceStatus": {"type": "string"}}},
    },
}
T = ssa.TypeInfo.from_crd_schema(SCHEMA)


def rs(spec: dict | None = None, **metadata) -> dict:
    """A RayService apply body / object."""
    out = {
        "apiVersion": API,
        "kind": "RayService",
        "metadata": {"name": "mnist", "namespace": "ml", **metadata},
    }
    if spec is not None:
        out["spec"] = spec
    return out


RELEASE = rs(
    labels={"app": "mnist", "release": "r1"},
    spec={
        "serveConfigV2": "applications: [v1]",
        "rayClusterConfig": {
            "rayVersion": "2.9.0",
            "headGroupSpec": {"rayStartParams": {"num-cpus": "0"}},
        },
        "containers": [{"name": "ray-head", "image": "ray:2.9.0"}],
        "args": ["--serve"],
    },
)


def released() -> dict:
    return ssa.apply(None, copy.deepcopy(RELEASE), "ray-app", T)


def conflicts_of(call) -> list[tuple[str, str]]:
    with pytest.raises(ssa.Conflict) as err:
        call()
    return err.value.conflicts


# ------------------------------------------------------------------------------ 1: the pipeline


def test_same_manager_applying_one_field_removes_every_other_field_it_applied():
    """[doc: Field management] "If you remove a field from a manifest and apply that manifest,
    Server-Side Apply checks if there are any other field managers that also own the field. If
    the field is not owned by any other field managers, it is either deleted from the live
    object ...". [SMD merge/leaf_test.go: apply_twice_remove; merge/multiple_appliers_test.go:
    unset_complex_sole_owner]. The pipeline's bug: release applies the whole RayService as
    `ray-app`, deploy applies only spec.serveConfigV2 as `ray-app`."""
    live = released()
    out = ssa.apply(live, rs({"serveConfigV2": "applications: [v2]"}), "ray-app", T)

    assert out["spec"] == {"serveConfigV2": "applications: [v2]"}
    assert "labels" not in out["metadata"]
    assert out["metadata"]["name"] == "mnist" and out["metadata"]["namespace"] == "ml"
    assert ssa.owned(out, "ray-app") == {".spec.serveConfigV2"}


# ------------------------------------------------------------------- 2: a second applier


def test_another_manager_applying_one_field_keeps_the_rest_conflicts_and_can_force():
    """[doc: Conflicts] "A conflict is a special status error that occurs when an Apply
    operation tries to change a field that another manager also claims to manage"; forcing
    makes the applier the field's only manager. [SMD merge/leaf_test.go:
    apply_update_apply_with_conflict (then ForceApply); merge/multiple_appliers_test.go:
    change_value_yes_conflict]."""
    live = released()

    # A field nobody owns: B gets it, nothing of A's is touched.
    live = ssa.apply(live, rs({"suspend": False}), "deploy", T)
    assert live["spec"]["rayClusterConfig"] == RELEASE["spec"]["rayClusterConfig"]
    assert live["metadata"]["labels"] == {"app": "mnist", "release": "r1"}
    assert ssa.owners(live, ("spec", "suspend")) == {"deploy"}

    # A field A owns, with another value: conflict, nothing changes.
    change = rs({"suspend": False, "serveConfigV2": "applications: [v2]"})
    assert conflicts_of(lambda: ssa.apply(live, change, "deploy", T)) == [
        ("ray-app", ".spec.serveConfigV2")
    ]

    # Forced: the value and the ownership move to B; A keeps the rest.
    live = ssa.apply(live, change, "deploy", T, force=True)
    assert live["spec"]["serveConfigV2"] == "applications: [v2]"
    assert ssa.owners(live, ("spec", "serveConfigV2")) == {"deploy"}
    assert ".spec.serveConfigV2" not in ssa.owned(live, "ray-app")
    assert ssa.owners(live, ("spec", "rayClusterConfig", "rayVersion")) == {"ray-app"}

    # A re-applies its old value: now it is A that conflicts, with B.
    assert conflicts_of(lambda: ssa.apply(live, copy.deepcopy(RELEASE), "ray-app", T)) == [
        ("deploy", ".spec.serveConfigV2")
    ]


# ------------------------------------------------------------------ 3: shared ownership


def test_same_value_is_shared_and_survives_one_owner_dropping_it():
    """[doc: Field management] "If two or more appliers set a field to the same value, they
    share ownership of that field. Any subsequent attempt to change the value of the shared
    field, by any of the appliers, results in a conflict. Shared field owners may give up
    ownership of a field by making a Server-Side Apply patch request that doesn't include that
    field." [SMD merge/multiple_appliers_test.go: same_value_no_conflict,
    unset_scalar_shared_with_applier]."""
    live = released()
    live = ssa.apply(live, rs({"serveConfigV2": "applications: [v1]"}), "deploy", T)
    assert ssa.owners(live, ("spec", "serveConfigV2")) == {"ray-app", "deploy"}

    # Either co-owner changing it conflicts with the other.
    assert conflicts_of(lambda: ssa.apply(live, rs({"serveConfigV2": "x"}), "deploy", T)) == [
        ("ray-app", ".spec.serveConfigV2")
    ]

    # ray-app drops it: it stays (deploy still owns it), only ray-app's claim goes.
    without = copy.deepcopy(RELEASE)
    del without["spec"]["serveConfigV2"]
    live = ssa.apply(live, without, "ray-app", T)
    assert live["spec"]["serveConfigV2"] == "applications: [v1]"
    assert ssa.owners(live, ("spec", "serveConfigV2")) == {"deploy"}

    # The last owner drops it: now it goes. (Its `spec: {}` is owned as a leaf: SMD
    # typed/tofieldset.go owns an empty map itself.)
    live = ssa.apply(live, rs({}), "deploy", T)
    assert "serveConfigV2" not in live["spec"]
    assert ssa.owned(live, "deploy") == {".spec"}
    live = ssa.apply(live, rs(), "deploy", T)
    assert [e["manager"] for e in ssa.managed_fields(live)] == ["ray-app"]


# -------------------------------------------------------------- 4: patch, then apply


def test_merge_patch_takes_ownership_and_a_later_apply_of_another_value_conflicts():
    """[doc: Field management] "Whenever a field's value does change, ownership moves from its
    current manager to the manager making the change" -- an Update (PUT, or a non-apply PATCH
    like `kubectl patch --type merge`) never conflicts. [SMD merge/leaf_test.go:
    apply_update_apply_with_conflict; merge/multiple_appliers_test.go: updater_claims_field].
    Then `kubectl apply --server-side` of the old value conflicts with the patcher."""
    live = released()
    live = ssa.merge_patch(
        live, {"spec": {"serveConfigV2": "applications: [hotfix]"}}, "kubectl-patch", T
    )
    assert live["spec"]["serveConfigV2"] == "applications: [hotfix]"
    assert ssa.owners(live, ("spec", "serveConfigV2")) == {"kubectl-patch"}
    assert ".spec.serveConfigV2" not in ssa.owned(live, "ray-app")
    assert ssa.owned(live, "kubectl-patch", "Update") == {".spec.serveConfigV2"}

    assert conflicts_of(lambda: ssa.apply(live, copy.deepcopy(RELEASE), "ray-app", T)) == [
        ("kubectl-patch", ".spec.serveConfigV2")
    ]

    # Applying the patched value is no change: shared, no conflict.
    same = copy.deepcopy(RELEASE)
    same["spec"]["serveConfigV2"] = "applications: [hotfix]"
    live = ssa.apply(live, same, "ray-app", T)
    assert ssa.owners(live, ("spec", "serveConfigV2")) == {"ray-app", "kubectl-patch"}


def test_apply_and_update_entries_of_one_manager_are_separate():
    """[apiserver managedfields.go BuildManagerIdentifier]: the identifier is manager +
    operation (+ apiVersion for Update), so `ray-app` patching and `ray-app` applying are two
    managedFields entries -- and one can conflict with the other."""
    live = released()
    live = ssa.merge_patch(live, {"spec": {"serveConfigV2": "x"}}, "ray-app", T)
    assert [(e["manager"], e["operation"]) for e in ssa.managed_fields(live)] == [
        ("ray-app", "Apply"),
        ("ray-app", "Update"),
    ]
    with pytest.raises(ssa.Conflict) as err:
        ssa.apply(live, copy.deepcopy(RELEASE), "ray-app", T)
    assert err.value.message == (
        'Apply failed with 1 conflict: conflict with "ray-app" using ray.io/v1: .spec.serveConfigV2'
    )


# ------------------------------------------------------------------- 5: lists and maps


def test_atomic_list_is_one_leaf_replaced_whole():
    """[doc: Merge strategy] `x-kubernetes-list-type: atomic` -- "the list is treated as a
    single entity, like a scalar"; [doc: Custom resources] "all lists are considered atomic"
    unless the schema says otherwise (the CRD default for x-kubernetes-list-type)."""
    live = ssa.apply(None, rs({"args": ["--a", "--b"]}), "ray-app", T)
    assert ssa.managed_fields(live)[0]["fieldsV1"] == {"f:spec": {"f:args": {}}}

    assert conflicts_of(lambda: ssa.apply(live, rs({"args": ["--c"]}), "deploy", T)) == [
        ("ray-app", ".spec.args")
    ]
    live = ssa.apply(live, rs({"args": ["--c"]}), "deploy", T, force=True)
    assert live["spec"]["args"] == ["--c"]  # replaced, not merged
    assert ssa.owners(live, ("spec", "args")) == {"deploy"}
    assert not any(e["manager"] == "ray-app" for e in ssa.managed_fields(live))


def test_list_map_merges_item_by_item():
    """[doc: Merge strategy] `x-kubernetes-list-type: map` -- "these lists are like maps in
    that their elements have a non-index key". [SMD merge/multiple_appliers_test.go:
    remove_one_keep_one_with_two_sub_items; merge/key_test.go]. Each container is its own
    item: two appliers each own theirs; changing the other's item's field conflicts there."""
    live = ssa.apply(
        None, rs({"containers": [{"name": "ray-head", "image": "ray:1"}]}), "ray-app", T
    )
    live = ssa.apply(live, rs({"containers": [{"name": "sidecar", "image": "envoy"}]}), "mesh", T)
    assert [c["name"] for c in live["spec"]["containers"]] == ["ray-head", "sidecar"]
    assert ssa.owners(live, ("spec", "containers", {"name": "ray-head"})) == {"ray-app"}
    assert ssa.owners(live, ("spec", "containers", {"name": "sidecar"}, "image")) == {"mesh"}

    bump = rs(
        {
            "containers": [
                {"name": "sidecar", "image": "envoy"},
                {"name": "ray-head", "image": "ray:2"},
            ]
        }
    )
    assert conflicts_of(lambda: ssa.apply(live, bump, "mesh", T)) == [
        ("ray-app", '.spec.containers[name="ray-head"].image')
    ]


def test_set_items_are_leaves():
    """[doc: Merge strategy] `x-kubernetes-list-type: set` -- items are scalars, each owned
    on its own (`v:` keys). [SMD merge/set_test.go: apply_update_apply_no_overlap;
    merge/multiple_appliers_test.go: remove_one]. ObjectMeta's finalizers are such a set."""
    live = ssa.apply(None, rs({"tags": ["a", "b"]}, finalizers=["ray.io/cleanup"]), "ray-app", T)
    live = ssa.apply(live, rs({"tags": ["c"]}, finalizers=["mesh/drain"]), "mesh", T)
    assert live["spec"]["tags"] == ["a", "b", "c"]
    assert live["metadata"]["finalizers"] == ["ray.io/cleanup", "mesh/drain"]
    assert ssa.owners(live, ("spec", "tags", V("c"))) == {"mesh"}

    live = ssa.apply(live, rs({"tags": ["a"]}, finalizers=["ray.io/cleanup"]), "ray-app", T)
    assert live["spec"]["tags"] == ["a", "c"]  # b was ray-app's alone


def test_granular_map_merges_by_key_atomic_map_is_one_leaf():
    """[doc: Merge strategy] `x-kubernetes-map-type: granular` (the default for maps:
    labels, additionalProperties) merges key by key; `atomic` makes the map a single leaf.
    [SMD merge/multiple_appliers_test.go: TestMultipleApplierAtomicMaps force]."""
    live = ssa.apply(
        None, rs({"env": {"A": "1"}, "selector": {"app": "x"}}, labels={"a": "1"}), "ray-app", T
    )
    live = ssa.apply(live, rs({"env": {"B": "2"}}, labels={"b": "2"}), "mesh", T)
    assert live["spec"]["env"] == {"A": "1", "B": "2"}
    assert live["metadata"]["labels"] == {"a": "1", "b": "2"}

    assert conflicts_of(lambda: ssa.apply(live, rs({"selector": {"tier": "y"}}), "mesh", T)) == [
        ("ray-app", ".spec.selector")
    ]
    live = ssa.apply(live, rs({"selector": {"tier": "y"}}), "mesh", T, force=True)
    assert live["spec"]["selector"] == {"tier": "y"}  # replaced whole


def test_preserve_unknown_fields_are_granular_maps_and_atomic_lists():
    """x-kubernetes-preserve-unknown-fields: values get SMD's deduced type -- maps granular,
    lists atomic [SMD typed/parser.go DeducedParseableType; merge/preserve_unknown_test.go;
    merge/multiple_appliers_test.go: multiple_appliers_recursive_map_deduced]."""
    live = ssa.apply(None, rs({"extra": {"cfg": {"x": 1}, "list": [1, 2]}}), "ray-app", T)
    live = ssa.apply(live, rs({"extra": {"cfg": {"y": 2}}}), "mesh", T)
    assert live["spec"]["extra"] == {"cfg": {"x": 1, "y": 2}, "list": [1, 2]}
    assert conflicts_of(lambda: ssa.apply(live, rs({"extra": {"list": [3]}}), "mesh", T)) == [
        ("ray-app", ".spec.extra.list")
    ]


def test_removing_an_applied_list_map_item_removes_it_unless_another_applier_owns_it():
    """[doc: Field management] "The same rule applies to associative list or map items".
    [SMD merge/multiple_appliers_test.go: remove_one_keep_one_with_two_sub_items,
    remove_one_with_dangling_subitem_keep_one]: an item the dropping applier owned alone goes,
    even with a field an Update manager added to it (that manager's entry goes with it); an
    item another applier also owns stays, with only that applier's fields."""
    live = ssa.apply(
        None,
        rs(
            {
                "containers": [
                    {"name": "ray-head", "image": "ray"},
                    {"name": "worker", "image": "ray"},
                    {"name": "logger", "image": "fluent"},
                ]
            }
        ),
        "ray-app",
        T,
    )
    live = ssa.merge_patch(
        live,
        {
            "spec": {
                "containers": [
                    {"name": "ray-head", "image": "ray"},
                    {"name": "worker", "image": "ray", "command": ["run"]},
                    {"name": "logger", "image": "fluent"},
                ]
            }
        },
        "operator",
        T,
    )
    assert ssa.owners(live, ("spec", "containers", {"name": "worker"}, "command")) == {"operator"}
    live = ssa.apply(live, rs({"containers": [{"name": "logger", "image": "fluent"}]}), "mesh", T)

    live = ssa.apply(live, rs({"containers": [{"name": "ray-head", "image": "ray"}]}), "ray-app", T)
    assert live["spec"]["containers"] == [
        {"name": "ray-head", "image": "ray"},
        {"name": "logger", "image": "fluent"},
    ]
    assert [e["manager"] for e in ssa.managed_fields(live)] == ["mesh", "ray-app"]


# ------------------------------------------------------------- 6: managedFields format


def test_managed_fields_are_in_the_api_servers_format():
    """[SMD fieldpath/serialize.go, serialize-pe.go; apiserver managedfields.go]: FieldsV1
    keys `f:` (field or map key), `k:` (list-map item: JSON of its key fields sorted by name,
    a left-out key taking its schema default), `v:` (set item; JSON as Go writes it, `&` as
    \\u0026), `.` (the item itself, beside its fields); apiVersion/kind/metadata.name are never
    owned [apiserver stripmeta.go]; Apply entries before Update entries."""
    body = rs(
        labels={"app": "mnist"},
        annotations={"ray.io/ft": "true"},
        finalizers=["ray.io/cleanup"],
        ownerReferences=[{"apiVersion": "v1", "kind": "ConfigMap", "name": "cfg", "uid": "u-1"}],
        spec={
            "serveConfigV2": "applications: []",
            "args": ["--a"],
            "tags": ["x", "a&b"],
            "env": {"A": "1"},
            "selector": {"app": "mnist"},
            "containers": [
                {
                    "name": "ray-head",
                    "image": "ray",
                    "ports": [{"containerPort": 6379, "name": "gcs"}],
                }
            ],
            "extra": {"cfg": {"k": 1}, "list": [1]},
        },
    )
    live = ssa.apply(None, body, "ray-app", T)
    live = ssa.merge_patch(
        live,
        {"metadata": {"labels": {"team": "ml"}}, "spec": {"suspend": True}},
        "kubectl-patch",
        T,
    )

    assert ssa.managed_fields(live) == [
        {
            "manager": "ray-app",
            "operation": "Apply",
            "apiVersion": "ray.io/v1",
            "fieldsType": "FieldsV1",
            "fieldsV1": {
                "f:metadata": {
                    "f:annotations": {"f:ray.io/ft": {}},
                    "f:finalizers": {'v:"ray.io/cleanup"': {}},
                    "f:labels": {"f:app": {}},
                    "f:ownerReferences": {
                        'k:{"uid":"u-1"}': {
                            ".": {},
                            "f:apiVersion": {},
                            "f:kind": {},
                            "f:name": {},
                            "f:uid": {},
                        }
                    },
                },
                "f:spec": {
                    "f:args": {},
                    "f:containers": {
                        'k:{"name":"ray-head"}': {
                            ".": {},
                            "f:image": {},
                            "f:name": {},
                            "f:ports": {
                                'k:{"containerPort":6379,"protocol":"TCP"}': {
                                    ".": {},
                                    "f:containerPort": {},
                                    "f:name": {},
                                }
                            },
                        }
                    },
                    "f:env": {"f:A": {}},
                    "f:extra": {"f:cfg": {".": {}, "f:k": {}}, "f:list": {}},
                    "f:selector": {},
                    "f:serveConfigV2": {},
                    "f:tags": {'v:"a\\u0026b"': {}, 'v:"x"': {}},
                },
            },
        },
        {
            "manager": "kubectl-patch",
            "operation": "Update",
            "apiVersion": "ray.io/v1",
            "fieldsType": "FieldsV1",
            "fieldsV1": {"f:metadata": {"f:labels": {"f:team": {}}}, "f:spec": {"f:suspend": {}}},
        },
    ]


def test_an_update_that_adds_a_map_owns_the_map_itself():
    """[SMD typed/compare.go]: an Update owns every path it *added*, granular maps included,
    which FieldsV1 shows as `".": {}` -- how a `kubectl create` (an Update) of a custom
    resource shows up -- while an Apply owns only what its config names (no `.` on structs)."""
    live = ssa.update(None, rs({"env": {"A": "1"}}, labels={"app": "x"}), "kubectl-create", T)
    assert ssa.managed_fields(live) == [
        {
            "manager": "kubectl-create",
            "operation": "Update",
            "apiVersion": "ray.io/v1",
            "fieldsType": "FieldsV1",
            "fieldsV1": {
                "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
                "f:spec": {".": {}, "f:env": {".": {}, "f:A": {}}},
            },
        }
    ]
    # An update that changes nothing records nothing [apiserver managedfieldsupdater.go].
    assert ssa.update(live, copy.deepcopy(live), "noop", T) == live


# ------------------------------------------------------------ 7: an updater co-owns


def test_dropping_a_field_an_update_manager_also_owns_keeps_it():
    """[SMD merge/multiple_appliers_test.go: unset_scalar_shared_with_updater;
    merge/leaf_test.go: update_apply_omits]: a field the applier stops applying stays if an
    Update manager owns it too -- prune only removes what nobody else owns."""
    live = ssa.update(None, rs({"serveConfigV2": "s"}, labels={"team": "ml"}), "kubectl-create", T)
    live = ssa.apply(live, rs({"serveConfigV2": "s"}, labels={"team": "ml"}), "ray-app", T)
    assert ssa.owners(live, ("metadata", "labels", "team")) == {"kubectl-create", "ray-app"}

    live = ssa.apply(live, rs({"serveConfigV2": "s"}), "ray-app", T)
    assert live["metadata"]["labels"] == {"team": "ml"}
    assert ssa.owners(live, ("metadata", "labels", "team")) == {"kubectl-create"}

    # update_apply_omits: an updater takes the field over; the applier's empty apply keeps it.
    live = ssa.merge_patch(live, {"spec": {"serveConfigV2": "t"}}, "operator", T)
    live = ssa.apply(live, rs(), "ray-app", T)
    assert live["spec"]["serveConfigV2"] == "t"
    assert not any(e["manager"] == "ray-app" for e in ssa.managed_fields(live))


# ---------------------------------------------------------- errors and server-owned fields


def test_conflict_error_reads_as_the_api_servers():
    """[apiserver conflict.go getConflictMessage, printManager; SMD merge/conflict.go]: all
    conflicts at once, grouped by manager, Update managers "using <apiVersion>"; a 409 Status
    with one FieldManagerConflict cause per field."""
    live = released()
    live = ssa.merge_patch(live, {"spec": {"suspend": True}}, "kubectl-edit", T)
    config = rs(
        {"serveConfigV2": "x", "suspend": False, "rayClusterConfig": {"rayVersion": "2.10.0"}}
    )
    with pytest.raises(ssa.Conflict) as err:
        ssa.apply(live, config, "deploy", T)
    assert err.value.conflicts == [
        ("kubectl-edit", ".spec.suspend"),
        ("ray-app", ".spec.rayClusterConfig.rayVersion"),
        ("ray-app", ".spec.serveConfigV2"),
    ]
    assert err.value.message == (
        "Apply failed with 3 conflicts: "
        'conflicts with "kubectl-edit" using ray.io/v1:\n- .spec.suspend\n'
        'conflicts with "ray-app":\n- .spec.rayClusterConfig.rayVersion\n- .spec.serveConfigV2'
    )
    assert err.value.status["code"] == 409 and err.value.status["reason"] == "Conflict"
    assert err.value.causes[0] == {
        "type": "FieldManagerConflict",
        "message": 'conflict with "kubectl-edit" using ray.io/v1',
        "field": ".spec.suspend",
    }


def test_malformed_apply_bodies_are_rejected():
    """[SMD typed/helpers.go keyedAssociativeListItemToPathElement, setItemToPathElement;
    typed/merge.go "duplicate entries for key"]: a list-map item with none of its key fields,
    a repeated key, a map in a set -> 422; [apiserver fieldmanager.go] an apply body carrying
    managedFields -> 400. An Update tolerates duplicates (SMD's AllowDuplicates)."""
    with pytest.raises(ssa.Invalid) as err:
        ssa.apply(None, rs({"containers": [{"image": "ray"}]}), "ray-app", T)
    assert err.value.code == 422
    assert 'omits all key fields ["name"]' in err.value.message
    assert err.value.message.startswith("failed to create typed patch object: ")

    twice = rs({"containers": [{"name": "a"}, {"name": "a"}]})
    with pytest.raises(ssa.Invalid, match=r'duplicate entries for key \[name="a"\]'):
        ssa.apply(None, twice, "ray-app", T)
    assert (
        ssa.update(None, twice, "kubectl", T)["spec"]["containers"] == twice["spec"]["containers"]
    )
    with pytest.raises(ssa.Invalid, match="map type"):
        ssa.apply(None, rs({"tags": [{"a": 1}]}), "ray-app", T)

    live = released()
    with pytest.raises(ssa.BadRequest, match=r"metadata\.managedFields must be nil") as err:
        ssa.apply(live, live, "ray-app", T)
    assert err.value.code == 400 and isinstance(err.value, ssa.Invalid)


def test_status_and_system_metadata_are_the_servers():
    """Status is a subresource: writes to the main resource leave it as it was (the CRD
    strategy's ResetFields, which SMD ignores for ownership [SMD merge/ignore_test.go:
    apply_does_not_own_ignored, update_does_not_own_ignored]); generation, resourceVersion,
    uid, creationTimestamp are the server's, never owned [apiserver stripmeta.go]."""
    live = released()
    live["status"] = {"serviceStatus": "Running"}
    live["metadata"].update(
        uid="u-9", resourceVersion="7", generation=2, creationTimestamp="2024-01-01T00:00:00Z"
    )
    body = rs({"serveConfigV2": "applications: [v1]"}, resourceVersion="7", generation=99)
    body["status"] = {"serviceStatus": "Failed"}

    out = ssa.apply(live, body, "deploy", T)
    out = ssa.merge_patch(out, {"status": {"serviceStatus": "Gone"}}, "kubectl-patch", T)
    out = ssa.update(out, {**copy.deepcopy(out), "status": None}, "kubectl-replace", T)
    assert out["status"] == {"serviceStatus": "Running"}
    assert {
        k: out["metadata"][k] for k in ("uid", "resourceVersion", "generation", "creationTimestamp")
    } == {
        "uid": "u-9",
        "resourceVersion": "7",
        "generation": 2,
        "creationTimestamp": "2024-01-01T00:00:00Z",
    }
    assert sorted(e["manager"] for e in ssa.managed_fields(out)) == ["deploy", "ray-app"]
    assert ssa.owned(out, "deploy") == {".spec.serveConfigV2"}


def test_fields_the_schema_does_not_declare_are_pruned():
    """CRD structural pruning (Kubernetes docs, "Custom Resources: Field pruning"): what the
    schema does not declare is dropped from the request before field management sees it, unless
    under x-kubernetes-preserve-unknown-fields."""
    out = ssa.apply(
        None, rs({"serveConfigV2": "s", "serveConfig": "typo"}, bogus="x"), "ray-app", T
    )
    assert out["spec"] == {"serveConfigV2": "s"}
    assert "bogus" not in out["metadata"]
    assert ssa.owned(out, "ray-app") == {".spec.serveConfigV2"}


def test_managed_fields_can_be_cleared_by_an_update():
    """[doc: Clearing managedFields]: an update that sets managedFields to a list with one
    empty entry strips them; an empty list leaves them alone."""
    live = released()
    kept = ssa.merge_patch(live, {"metadata": {"managedFields": []}}, "kubectl-patch", T)
    assert ssa.managed_fields(kept) == ssa.managed_fields(live)
    cleared = ssa.merge_patch(live, {"metadata": {"managedFields": [{}]}}, "kubectl-patch", T)
    assert ssa.managed_fields(cleared) == []
    assert cleared["spec"] == live["spec"]


def test_time_is_optional_and_orders_entries():
    """[apiserver managedfieldsupdater.go, managedfields.go sortEncodedManagedFields]: an
    entry is stamped when its write changed the object; Apply entries first, then by time."""
    live = ssa.apply(None, rs({"serveConfigV2": "s"}), "b-app", T, now="2024-01-02T00:00:00Z")
    live = ssa.apply(live, rs({"suspend": True}), "a-app", T, now="2024-01-03T00:00:00Z")
    live = ssa.apply(live, rs({"serveConfigV2": "s"}), "b-app", T, now="2024-01-04T00:00:00Z")
    assert [(e["manager"], e.get("time")) for e in ssa.managed_fields(live)] == [
        ("b-app", "2024-01-02T00:00:00Z"),
        ("a-app", "2024-01-03T00:00:00Z"),
    ]


# --------------------------------------------------------------------- the real CRD


@pytest.fixture(scope="module")
def rayservice_types() -> ssa.TypeInfo:
    with (CRDS / "ray.io_rayservices.yaml").open() as f:
        crd = yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    v1 = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    return ssa.TypeInfo.from_crd_schema(
        v1["schema"]["openAPIV3Schema"], status_subresource="status" in v1.get("subresources", {})
    )


def test_real_rayservice_crd(rayservice_types):
    """`from_crd_schema` on KubeRay's RayService CRD (v1): pod template containers are a
    list-map keyed by name, ports by containerPort+protocol (protocol defaulting to TCP in the
    key [SMD merge/default_keys_test.go]), workerGroupSpecs an atomic list (no list type);
    and the pipeline's case -- ray-app applying only serveConfigV2 removes the rest."""
    types = rayservice_types
    image = "rayproject/ray:2.9.0"
    body = rs(
        labels={"app": "mnist"},
        spec={
            "serveConfigV2": "applications: []\n",
            "rayClusterConfig": {
                "rayVersion": "2.9.0",
                "headGroupSpec": {
                    "rayStartParams": {"dashboard-host": "0.0.0.0"},
                    "template": {
                        "spec": {
                            "containers": [
                                {
                                    "name": "ray-head",
                                    "image": image,
                                    "ports": [{"containerPort": 6379, "name": "gcs"}],
                                }
                            ]
                        }
                    },
                },
                "workerGroupSpecs": [
                    {
                        "groupName": "cpu",
                        "replicas": 1,
                        "minReplicas": 1,
                        "maxReplicas": 2,
                        "rayStartParams": {},
                        "template": {
                            "spec": {"containers": [{"name": "ray-worker", "image": image}]}
                        },
                    }
                ],
            },
        },
    )
    live = ssa.apply(None, body, "ray-app", types)
    assert live["spec"] == body["spec"]
    cluster = ssa.managed_fields(live)[0]["fieldsV1"]["f:spec"]["f:rayClusterConfig"]
    assert cluster["f:workerGroupSpecs"] == {}
    assert cluster["f:headGroupSpec"]["f:template"]["f:spec"]["f:containers"] == {
        'k:{"name":"ray-head"}': {
            ".": {},
            "f:image": {},
            "f:name": {},
            "f:ports": {
                'k:{"containerPort":6379,"protocol":"TCP"}': {
                    ".": {},
                    "f:containerPort": {},
                    "f:name": {},
                }
            },
        }
    }

    # Another applier cannot co-own worker groups: the list is one leaf.
    workers = rs({"rayClusterConfig": {"workerGroupSpecs": [{"groupName": "gpu"}]}})
    assert conflicts_of(lambda: ssa.apply(live, workers, "autoscaler", types)) == [
        ("ray-app", ".spec.rayClusterConfig.workerGroupSpecs")
    ]

    out = ssa.apply(live, rs({"serveConfigV2": "applications: [v2]\n"}), "ray-app", types)
    assert out["spec"] == {"serveConfigV2": "applications: [v2]\n"}
    assert "labels" not in out["metadata"]
