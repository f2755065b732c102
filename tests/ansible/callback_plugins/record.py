"""Test-only Ansible callback: writes every task result and the final stats as JSON to
the file named by PORTD_ANSIBLE_RECORD, so that tests assert on what the module
returned rather than on screen output."""

import json
import os

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: record
type: aggregate
short_description: write task results and stats to a JSON file (tests only)
description:
  - Writes the results of every task and the play's stats to the file named by the
    environment variable PORTD_ANSIBLE_RECORD.
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "record"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        self.tasks = []

    def _record(self, result, status):
        self.tasks.append(
            {"task": result._task.get_name(), "host": result._host.get_name(), "status": status, "result": result._result}
        )

    def v2_runner_on_ok(self, result):
        self._record(result, "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._record(result, "failed")

    def v2_runner_on_unreachable(self, result):
        self._record(result, "unreachable")

    def v2_runner_on_skipped(self, result):
        self._record(result, "skipped")

    def v2_playbook_on_stats(self, stats):
        hosts = {h: stats.summarize(h) for h in sorted(stats.processed)}
        with open(os.environ["PORTD_ANSIBLE_RECORD"], "w") as f:
            json.dump({"tasks": self.tasks, "stats": hosts}, f, default=str)
