"""The runtime image takes away the base image's passwordless sudo and ends as its non-root user.

rayproject/ray adds its user to the sudo group and to /etc/sudoers with NOPASSWD (ray-project/ray
docker/base-deps/Dockerfile). The final stage of docker/Dockerfile must, as root, purge the sudo
package, delete /etc/sudoers and /etc/sudoers.d and take the user out of the sudo group, then
switch back to a non-root user for good. No Docker engine here: the Dockerfile is parsed.
"""

from __future__ import annotations

import re

import pytest

from tests.support.procs import REPO

DOCKERFILE = REPO / "docker" / "Dockerfile"
ROOT_USERS = {"root", "0"}


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    current = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue
        current += " " + stripped.removesuffix("\\")
        if not stripped.endswith("\\"):
            word, _, rest = current.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
            current = ""
    return out


def _is_root(user: str) -> bool:
    return user.split(":")[0] in ROOT_USERS


def sudo_problems(text: str) -> list[str]:
    """Why the final stage keeps sudo rights or runs as root; empty when it does neither."""
    steps = instructions(text)
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    final = steps[last_from + 1 :]
    user, removed, problems = "", {"package": False, "rules": False, "group": False}, []
    for word, args in final:
        if word == "USER":
            user = args
        elif word == "RUN" and _is_root(user):
            if re.search(r"(dpkg --purge|apt-get (-y )?(purge|remove)( -y)?)\b.*\bsudo\b", args):
                removed["package"] = True
            if "/etc/sudoers " in args + " " and "/etc/sudoers.d" in args and "rm " in args:
                removed["rules"] = True
            if re.search(r"(gpasswd (--delete|-d) \S+ sudo|deluser \S+ sudo)\b", args):
                removed["group"] = True
    problems += [f"final stage does not remove sudo's {what}" for what, done in removed.items()
                 if not done]  # fmt: skip
    users = [args for word, args in final if word == "USER"]
    if not users or _is_root(users[-1]):
        problems.append(f"final stage ends as {users[-1] if users else 'the base image user'}")
    return problems


def test_the_image_drops_sudo_and_ends_non_root():
    assert sudo_problems(DOCKERFILE.read_text()) == []


REMOVAL = ("USER 0:0\nRUN dpkg --purge sudo \\\n    && rm -rf /etc/sudoers /etc/sudoers.d \\\n"
           "    && gpasswd --delete ray sudo\n")  # fmt: skip


@pytest.mark.parametrize(
    ("dockerfile", "expected"),
    [
        ("FROM ray\nUSER 1000:100\nRUN true\n", "does not remove sudo's package"),
        ("FROM ray\n" + REMOVAL, "ends as 0:0"),
        ("FROM ray\n" + REMOVAL + "USER root\n", "ends as root"),
        ("FROM ray AS build\n" + REMOVAL + "USER 1000\nFROM ray\nUSER 1000\n",
         "does not remove sudo's rules"),
        ("FROM ray\nUSER 1000\nRUN dpkg --purge sudo && rm -rf /etc/sudoers /etc/sudoers.d\n",
         "does not remove sudo's package"),  # as the user, the RUN would fail anyway
        ("FROM ray\nUSER 0\nRUN dpkg --purge sudo && rm -rf /etc/sudoers.d\nUSER 1000\n",
         "does not remove sudo's rules"),
        ("FROM ray\nUSER 0\nRUN dpkg --purge sudo && rm -rf /etc/sudoers /etc/sudoers.d\n"
         "USER 1000\n", "does not remove sudo's group"),
    ],
)  # fmt: skip
def test_the_check_bites(dockerfile: str, expected: str):
    problems = sudo_problems(dockerfile)
    assert any(expected in p for p in problems), problems
