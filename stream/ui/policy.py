"""What the UI's source box may open, and which Host names the server answers to.

Anyone who can load the page can type into the source box, and the server, not the browser,
opens what is typed: a file on the server, an internal URL, a socket told to listen. So the box
accepts by default only ``demo``, ``synthetic``, ``webcam`` and capture devices (/dev/videoN);
anything else only as the operator allowed it at start-up: ``--allow-source PATTERN``
(repeatable, shell-style: ``udp://127.0.0.1:*``, ``rtsp://scope.local/*``) and ``--allow-dir
DIR`` (files under DIR, after symlinks and ``..`` are resolved). The source given with
``--source`` at start-up is allowed as well. A refused source gets the same one-line answer
whether or not it exists, so the box tells nothing about the server's files.

The Host header is checked against the bound address and the names given with
``--allowed-host``: a page served under a foreign name (DNS rebinding) is refused.
"""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass, field

_DEVICE = re.compile(r"^/dev/video\d{1,3}$")
BUILT_IN = ("demo", "synthetic", "webcam")
REFUSED = (
    "not an allowed source: use demo, synthetic, webcam or /dev/videoN, or ask the operator to allow "
    "it when starting the UI (--allow-source PATTERN, --allow-dir DIR)"
)


class SourceRefused(ValueError):
    """A source the policy does not allow; its message is the same for every refused spec."""


@dataclass
class SourcePolicy:
    patterns: list[str] = field(default_factory=list)  # --allow-source
    dirs: list[str] = field(default_factory=list)  # --allow-dir
    exact: list[str] = field(default_factory=list)  # --source: the operator's own choice

    def __post_init__(self):
        self._roots = [os.path.realpath(d) for d in self.dirs]

    def allows(self, spec: str) -> bool:
        spec = spec.strip()
        if spec in BUILT_IN or spec in self.exact or _DEVICE.match(spec):
            return True
        if any(fnmatch.fnmatchcase(spec, p) for p in self.patterns):
            return True
        if "://" in spec or not self._roots:
            return False
        real = os.path.realpath(spec)  # no existence check: the answer must not depend on it
        return any(os.path.commonpath([real, root]) == root for root in self._roots)

    def check(self, spec: str) -> str:
        if not self.allows(spec):
            raise SourceRefused(REFUSED)
        return spec.strip()

    def choices(self, candidates: list[str]) -> list[str]:
        return [c for c in candidates if self.allows(c)]


LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1", "[::1]")
WILDCARD = ("0.0.0.0", "::", "")


def allowed_hosts(bound: str, names: list[str], share: bool) -> list[str]:
    """Host header values (without port) the server answers to: the bound address (loopback
    names for a loopback bind) and the operator's ``--allowed-host`` names."""
    hosts = list(names)
    if bound in LOOPBACK_NAMES:
        hosts += LOOPBACK_NAMES
    elif bound not in WILDCARD:
        hosts.append(bound)
    else:
        hosts += LOOPBACK_NAMES  # every interface: names beyond loopback only as given
    if share:
        hosts.append("*.gradio.live")  # Gradio's share tunnel forwards under its own name
    return list(dict.fromkeys(hosts))
