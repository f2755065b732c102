#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: portd contributors
# SPDX-License-Identifier: MIT OR Apache-2.0
"""Ansible module portd.portd.forwards: a thin driver of `portctl apply --json`.

portd does every check (schema, grants, conflicts with other owners) and reports what
changed; this module only turns parameters into a rules file, runs portctl on the
managed host and maps its answer and exit code onto Ansible's result.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: forwards
short_description: Manage the port forwards of a portd owner
version_added: "0.1.0"
description:
  - Replaces the caller's set of port forwards in portd with the forwards given, as
    C(portctl apply) does, and reports what changed.
  - The module runs C(portctl apply --json) on the managed host. portd validates the
    rules, checks the caller's grants and conflicts with other owners, and answers with
    the forwards it added, removed and changed. The task is C(changed) exactly when
    that answer lists a change, so a second run with the same forwards reports C(ok).
  - Check mode runs C(portctl apply --dry-run), so portd computes the same answer and
    the kernel is left as it was.
  - With C(--diff) the task shows the forwards that change, before and after, as YAML.
  - Warnings in portd's answer, such as a target port nothing listens on yet, become
    warnings of the task.
  - The set replaced is the caller's own (C(user:NAME) for the user the task runs as),
    or the one named by O(owner).
options:
  forwards:
    description:
      - The forwards of the set, in the schema of a portd rules file (the list under
        C(forwards:)). Each element is a dictionary with V(name), V(port), V(to), and
        optionally V(proto), V(family), V(local), V(interfaces), V(sources), V(mark),
        V(protect).
      - The elements are passed to portd as they are; portd reports any mistake naming
        the field and the value (for a port out of range, C(forwards[0].port) and
        C(70000 is not a port (1-65535))). Line and column in such messages refer to the
        rules file the module wrote, returned as RV(rules).
      - An empty list empties the set, as O(state=absent) does.
      - Mutually exclusive with O(src).
    type: list
    elements: dict
  src:
    description:
      - Path of a rules file on the managed host, with C(version) 1 and a list of
        C(forwards), to apply instead of O(forwards).
      - Errors name this file with line and column.
      - Mutually exclusive with O(forwards).
    type: path
  state:
    description:
      - V(present) makes the set exactly the forwards given by O(forwards) or O(src).
      - V(absent) removes every forward of the set; O(forwards) and O(src) must then
        be left out.
    type: str
    choices: [present, absent]
    default: present
  owner:
    description:
      - The owner whose set is replaced, V(user:NAME). Only root may act for another
        owner; anyone else gets a permission denied failure.
      - Default is the owner of the user the module runs as.
    type: str
  socket:
    description:
      - Control socket of portd.
      - Default is E(PORTD_SOCKET) in the module's environment, else
        C(/run/portd/portd.sock).
    type: path
  portctl:
    description:
      - Path of the C(portctl) binary on the managed host.
      - Default is C(portctl) found in E(PATH), C(/usr/bin) or C(/usr/sbin).
    type: path
extends_documentation_fragment:
  - action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
    details:
      - The diff lists only the forwards that change, each as YAML with its effective
        mark.
  platform:
    platforms: posix
notes:
  - The user the task runs as needs access to portd's socket (usually membership in
    group C(portd)), and a grant in C(/etc/portd/portd.yaml) for the ports it forwards
    unless it is root.
  - portd answers with at most 500 added, removed and changed forwards of each kind;
    RV(summary.omitted) counts the rest, and they are left out of the diff.
requirements:
  - portd and portctl installed on the managed host, portd running.
author:
  - portd contributors (@portd)
"""

EXAMPLES = r"""
- name: Forward 80 to 8080 and 443 to 8181 for the user the task runs as
  portd.portd.forwards:
    forwards:
      - name: http
        port: 80
        to: 8080
      - name: https
        port: 443
        to: 8181
        family: ipv4
        sources: [203.0.113.0/24]

- name: Apply a rules file that is already on the host, for the app user web
  portd.portd.forwards:
    src: /etc/portd/rules.yaml
    owner: user:web

- name: Remove every forward of user web
  portd.portd.forwards:
    owner: user:web
    state: absent

- name: A portd with its socket somewhere else, and portctl not in PATH
  portd.portd.forwards:
    forwards:
      - name: dns
        port: 53
        to: 5353
        proto: both
    socket: /run/portd-test/portd.sock
    portctl: /opt/portd/bin/portctl
"""

RETURN = r"""
summary:
  description:
    - portd's answer as C(portctl apply --json) prints it.
    - Each forward in it has C(owner), C(name), C(forward) (as in a rules file) and the
      effective C(mark).
  returned: success
  type: dict
  contains:
    added:
      description: Forwards that are new.
      type: list
      elements: dict
    removed:
      description: Forwards that are gone.
      type: list
      elements: dict
    changed:
      description: Forwards present before and after with other settings, each as C(name), C(old) and C(new).
      type: list
      elements: dict
    omitted:
      description: Changes portd did not list to keep its answer short.
      type: int
  sample:
    added:
      - owner: user:root
        name: http
        forward: {name: http, port: 80, to: 8080, proto: tcp, family: both}
        mark: 1
    removed: []
    changed: []
    omitted: 0
dry_run:
  description: True when nothing was applied (check mode).
  returned: success
  type: bool
  sample: false
rules:
  description: The rules file written from O(forwards), which positions in error messages refer to.
  returned: when O(forwards) is given or O(state=absent)
  type: str
  sample: "version: 1\nforwards:\n  - name: \"http\"\n    port: 80\n    to: 8080\n"
reason:
  description:
    - Why the task failed, from portctl's exit code. V(rejected) (1) for invalid
      forwards, a conflict or a kernel refusal; V(usage) (2); V(unreachable) (3) when
      portd is not running or the socket is wrong; V(denied) (4) when the caller may
      not use the socket, act for O(owner), or forward these ports.
  returned: failure
  type: str
  sample: unreachable
rc:
  description: Exit code of portctl.
  returned: always
  type: int
  sample: 0
cmd:
  description: The portctl command line that was run.
  returned: always
  type: list
  elements: str
  sample: [/usr/bin/portctl, --json, apply, /etc/portd/rules.yaml]
stderr:
  description:
    - What portctl printed on standard error. With C(--json), portctl reports failures on
      standard output instead, and their causes are in C(msg); this stays empty then.
  returned: always
  type: str
  sample: ""
"""

import json
import os
import re
import shutil
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_text

# portctl's exit codes and what they mean for the task.
REASONS = {1: "rejected", 2: "usage", 3: "unreachable", 4: "denied"}

# Fields of a forward in the order a rules file and a diff show them.
FIELD_ORDER = ("name", "port", "to", "proto", "family", "local", "interfaces", "sources", "mark", "protect")

# The name the rules file written from `forwards` gets; error messages start with it.
RULES_NAME = "forwards.yaml"


def _quote(text):
    """A YAML double-quoted scalar that reads back as exactly `text`."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif 0x20 <= code < 0x7F:
            out.append(ch)
        elif code <= 0xFF:
            out.append("\\x%02x" % code)
        elif code <= 0xFFFF:
            out.append("\\u%04x" % code)
        else:
            out.append("\\U%08x" % code)
    out.append('"')
    return "".join(out)


def _key(key):
    key = to_text(key)
    if key and all(c.isalnum() and c.isascii() or c in "_-" for c in key):
        return key
    return _quote(key)


def yaml_value(value):
    """One YAML flow value. Types are kept as they are so that portd judges them."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dict):
        return "{" + ", ".join("%s: %s" % (_key(k), yaml_value(v)) for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(yaml_value(v) for v in value) + "]"
    return _quote(to_text(value))


def ordered_items(entry):
    """The items of a forward, known fields first in the rules file's order."""
    known = [(k, entry[k]) for k in FIELD_ORDER if k in entry]
    rest = [(k, v) for k, v in entry.items() if k not in FIELD_ORDER]
    return known + rest


def yaml_forward(entry, indent, render=yaml_value):
    """A forward as a block sequence entry, one field per line."""
    if not isinstance(entry, dict) or not entry:
        return "%s- %s\n" % (indent, yaml_value(entry))
    lines = []
    for i, (key, value) in enumerate(ordered_items(entry)):
        lead = "- " if i == 0 else "  "
        lines.append("%s%s%s: %s\n" % (indent, lead, _key(key), render(value)))
    return "".join(lines)


def rules_text(forwards):
    """A rules file (version 1) holding `forwards`."""
    if not forwards:
        return "version: 1\nforwards: []\n"
    return "version: 1\nforwards:\n" + "".join(yaml_forward(f, "  ") for f in forwards)


class HexMark(int):
    """A mark shown in hexadecimal, as portd's configuration writes marks."""


# Strings a diff shows without quotes: names, protocols, families, interfaces, networks, ranges.
PLAIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_./:-]*$")


def _reads_as_other_type(text):
    if text.lower() in ("true", "false", "yes", "no", "on", "off", "y", "n", "null", "~"):
        return True
    for parse in (float, lambda t: int(t, 0)):
        try:
            parse(text)
            return True
        except ValueError:
            pass
    return False


def display_value(value):
    """A value in a diff, without quotes where the text is not ambiguous."""
    if isinstance(value, HexMark):
        return "0x%x" % value
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(display_value(v) for v in value) + "]"
    if isinstance(value, str) and PLAIN.match(value) and not _reads_as_other_type(value):
        return value
    return yaml_value(value)


def placed_yaml(placed):
    """One forward of portd's answer for a diff: every field, with the effective mark."""
    forward = dict(placed.get("forward") or {})
    forward.pop("mark", None)
    forward.setdefault("local", True)
    forward["mark"] = HexMark(placed.get("mark") or 0)
    return yaml_forward(forward, "", display_value)


def diff_of(summary):
    """Before and after of the forwards that change, as YAML text."""

    def order(placed):
        return (placed.get("owner", ""), (placed.get("forward") or {}).get("name", ""))

    before = sorted(list(summary.get("removed", [])) + [c["old"] for c in summary.get("changed", [])], key=order)
    after = sorted(list(summary.get("added", [])) + [c["new"] for c in summary.get("changed", [])], key=order)
    owners = sorted(set(p.get("owner", "?") for p in before + after))
    title = "portd forwards of %s" % ", ".join(owners) if owners else "portd forwards"
    return {
        "before": "".join(placed_yaml(p) for p in before),
        "after": "".join(placed_yaml(p) for p in after),
        "before_header": "%s (before)" % title,
        "after_header": "%s (after)" % title,
    }


def find_portctl(module):
    path = module.params["portctl"]
    if path:
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            module.fail_json(
                msg="portctl=%s is not an executable file; install portd or set `portctl` to the path of its portctl binary"
                % path,
                rc=None,
                cmd=[],
                stderr="",
            )
        return path
    return module.get_bin_path("portctl", required=True, opt_dirs=["/usr/bin", "/usr/sbin"])


def failure_message(rc, stdout, stderr, socket):
    reason = REASONS.get(rc)
    # With --json, portctl prints the failure as {"ok": false, "error": {"kind", "messages"}}
    # on standard output; older portctl printed the causes on standard error.
    lines = []
    try:
        answer = json.loads(stdout)
        if isinstance(answer, dict) and isinstance(answer.get("error"), dict):
            lines = [str(m) for m in answer["error"].get("messages") or []]
    except ValueError:
        pass
    if not lines:
        lines = [line[len("portctl: "):] if line.startswith("portctl: ") else line for line in stderr.strip().splitlines()]
    detail = "\n".join(lines) or "(portctl printed no cause)"
    where = socket or "the default socket (PORTD_SOCKET or /run/portd/portd.sock)"
    if reason == "unreachable":
        return "portd is unreachable at %s:\n%s\nStart portd (systemctl start portd) or set `socket` to its control socket." % (
            where,
            detail,
        )
    if reason == "denied":
        return (
            "permission denied:\n%s\nportd denies a user without access to its socket (group portd), forwards no grant "
            "in /etc/portd/portd.yaml allows, a target port another user listens on, and `owner` unless run as root."
            % detail
        )
    if reason == "rejected":
        return "the forwards were rejected; nothing was changed:\n%s" % detail
    if reason == "usage":
        return "portctl refused its command line (is it a portctl this module supports?):\n%s" % detail
    return "portctl failed with exit code %s:\n%s" % (rc, detail)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            forwards=dict(type="list", elements="dict"),
            src=dict(type="path"),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            owner=dict(type="str"),
            socket=dict(type="path"),
            portctl=dict(type="path"),
        ),
        mutually_exclusive=[("forwards", "src")],
        required_if=[("state", "present", ("forwards", "src"), True)],
        supports_check_mode=True,
    )
    params = module.params
    if params["state"] == "absent" and (params["forwards"] is not None or params["src"] is not None):
        module.fail_json(
            msg="state=absent removes every forward of the set; leave out `forwards` and `src` "
            "(to remove some forwards, list the others with state=present)"
        )

    portctl = find_portctl(module)
    tmpdir = None
    rules = None
    if params["src"] is not None:
        if not os.path.isfile(params["src"]):
            module.fail_json(msg="src=%s: no such file on the managed host" % params["src"], rc=None, cmd=[], stderr="")
        cwd = None
        rules_path = params["src"]
    else:
        forwards = params["forwards"] if params["state"] == "present" else []
        rules = rules_text(forwards)
        tmpdir = tempfile.mkdtemp(prefix="portd-forwards-", dir=module.tmpdir)
        with open(os.path.join(tmpdir, RULES_NAME), "w") as f:
            f.write(rules)
        # Run in the directory so that error messages name the file `forwards.yaml`.
        cwd = tmpdir
        rules_path = RULES_NAME

    cmd = [portctl, "--json"]
    if params["socket"]:
        cmd += ["--socket", params["socket"]]
    cmd += ["apply", rules_path]
    if module.check_mode:
        cmd.append("--dry-run")
    if params["owner"]:
        cmd += ["--owner", params["owner"]]

    try:
        rc, stdout, stderr = module.run_command(cmd, cwd=cwd)
    finally:
        if tmpdir:
            shutil.rmtree(tmpdir, ignore_errors=True)

    result = dict(changed=False, cmd=cmd, rc=rc, stderr=stderr)
    if rules is not None:
        result["rules"] = rules
    if rc != 0:
        # The class of failure is the exit code; the causes are in portctl's JSON answer.
        result["reason"] = REASONS.get(rc, "failed")
        module.fail_json(msg=failure_message(rc, stdout, stderr, params["socket"]), **result)

    try:
        answer = json.loads(stdout)
    except ValueError as e:
        module.fail_json(msg="portctl printed output that is not JSON (%s): %r" % (e, stdout[:400]), **result)
    if not isinstance(answer, dict) or answer.get("ok") is not True or not isinstance(answer.get("added"), list):
        module.fail_json(msg="unexpected answer from portctl apply --json: %r" % (stdout[:400],), **result)

    summary = answer
    omitted = answer.get("omitted", 0) or 0
    listed = sum(len(summary.get(kind) or []) for kind in ("added", "removed", "changed"))
    result["changed"] = listed + omitted > 0
    result["dry_run"] = bool(answer.get("dry_run"))
    result["summary"] = dict(
        added=summary.get("added") or [],
        removed=summary.get("removed") or [],
        changed=summary.get("changed") or [],
        omitted=omitted,
    )
    # What portd says did not stop the change (e.g. nothing listens on a target port yet).
    for warning in answer.get("warnings") or []:
        module.warn("portd: %s" % warning)
    if module._diff:
        result["diff"] = diff_of(summary)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
