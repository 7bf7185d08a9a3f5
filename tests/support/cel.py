"""A ValidatingAdmissionPolicy evaluated with cel-python (celpy), the way the API server runs it
(https://kubernetes.io/docs/reference/access-authn-authz/validating-admission-policy/): the
match conditions decide whether it applies; then the variables, in order (each sees the ones
before it as `variables.<name>`); then every validation, which must evaluate to true. An
evaluation error counts as a refusal (failurePolicy: Fail)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import celpy


@dataclass
class Decision:
    matched: bool
    refused: list[str] = field(default_factory=list)  # the messages of failed validations

    @property
    def allowed(self) -> bool:
        return not self.refused


def _run(env: celpy.Environment, expression: str, activation: dict[str, Any]) -> Any:
    try:
        return env.program(env.compile(expression)).evaluate(activation)
    except celpy.CELEvalError as exc:
        return exc


def request(username: str, resource: str, operation: str) -> dict[str, Any]:
    return {"operation": operation, "userInfo": {"username": username, "groups": []},
            "resource": {"group": "ray.io", "version": "v1", "resource": resource}}  # fmt: skip


def evaluate(policy: dict[str, Any], req: dict[str, Any], obj: dict[str, Any] | None,
             old: dict[str, Any] | None = None) -> Decision:  # fmt: skip
    env = celpy.Environment()
    spec = policy["spec"]
    rules = spec["matchConstraints"]["resourceRules"]
    if not any(req["resource"]["resource"] in r["resources"] and req["operation"] in r["operations"]
               for r in rules):  # fmt: skip
        return Decision(False)
    base = {"request": celpy.json_to_cel(req), "object": celpy.json_to_cel(obj),
            "oldObject": celpy.json_to_cel(old)}  # fmt: skip
    for condition in spec.get("matchConditions") or []:
        result = _run(env, condition["expression"], base)
        if isinstance(result, celpy.CELEvalError):
            return Decision(True, [f"match condition {condition['name']}: {result}"])
        if result is not True and result != celpy.celtypes.BoolType(True):
            return Decision(False)
    variables: dict[str, Any] = {}
    for variable in spec.get("variables") or []:
        activation = {**base, "variables": celpy.celtypes.MapType(variables)}
        variables[celpy.celtypes.StringType(variable["name"])] = _run(
            env, variable["expression"], activation
        )
    activation = {**base, "variables": celpy.celtypes.MapType(variables)}
    refused = []
    for validation in spec["validations"]:
        result = _run(env, validation["expression"], activation)
        if isinstance(result, celpy.CELEvalError) or not bool(result):
            refused.append(validation["message"])
    return Decision(True, refused)
