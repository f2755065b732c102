"""End-to-end test of the Ansible collection portd.portd.

Runs with the Python of a virtual environment that holds ansible-core (tests/ansible/run
sets it up). It checks the collection's tooling (ansible-doc, ansible-galaxy build and
install, ansible-test sanity, the example playbook's syntax), then starts the real portd
in a throwaway network namespace, joined to a client namespace by a veth pair, and runs
playbooks with the module portd.portd.forwards against localhost (connection local),
asserting on the task results, the kernel's table and real traffic from the client.

Nothing is skipped: a missing tool or binary is a failure that says what to install.
"""

import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
COLLECTIONS = os.path.join(ROOT, "ansible")
COLLECTION = os.path.join(COLLECTIONS, "ansible_collections", "portd", "portd")
VENV_BIN = os.path.dirname(sys.executable)
TAG = "pda%d" % os.getpid()
SRV, CLI = TAG + "s", TAG + "c"
SRV4, CLI4 = "10.253.0.1", "10.253.0.2"
TABLE = "portd"


class Fatal(Exception):
    """The test cannot go on; the message says why."""


def run(cmd, check=False, **kw):
    """Runs a command, capturing text output."""
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    kw.setdefault("stdin", subprocess.DEVNULL)
    try:
        proc = subprocess.run(cmd, text=True, **kw)
    except OSError as e:
        raise Fatal("cannot run %s: %s" % (cmd[0], e))
    if check and proc.returncode != 0:
        raise Fatal("%s failed (exit %d): %s%s" % (" ".join(cmd), proc.returncode, proc.stdout, proc.stderr))
    return proc


def in_ns(ns, *cmd):
    return ["ip", "netns", "exec", ns] + list(cmd)


class Results:
    """Counts checks; every failed check is printed with what was seen."""

    def __init__(self):
        self.passed = 0
        self.failed = []

    def check(self, name, ok, detail=""):
        if ok:
            self.passed += 1
            print("ok    %s" % name, flush=True)
        else:
            self.failed.append(name)
            print("FAIL  %s" % name, flush=True)
            if detail:
                print("      " + str(detail).replace("\n", "\n      "), flush=True)


def binary(name):
    var = name.upper() + "_BIN"
    path = os.environ.get(var) or os.path.join(ROOT, "target", "debug", name)
    if not os.access(path, os.X_OK):
        raise Fatal("%s not found; run `cargo build --workspace --bins` first or set %s" % (path, var))
    return path


def require_tools():
    if os.geteuid() != 0:
        raise Fatal("needs root to create network namespaces")
    for tool in ("ip", "nft", "socat", "su", "timeout", "ss"):
        if shutil.which(tool) is None:
            raise Fatal("`%s` is not installed (apt-get install iproute2 nftables socat util-linux coreutils login)" % tool)


class World:
    """Namespaces, portd, apps and a scratch directory; all removed by close()."""

    def __init__(self):
        self.tmp = tempfile.mkdtemp(prefix="portd-ansible-")
        os.chmod(self.tmp, 0o755)
        self.procs = []
        self.portd = None
        self.socket = os.path.join(self.tmp, "portd.sock")
        self.portd_bin = binary("portd")
        self.portctl = binary("portctl")
        self.nobody_home = os.path.join(self.tmp, "nobody")
        os.mkdir(self.nobody_home)
        os.chmod(self.nobody_home, 0o777)
        os.mkdir(os.path.join(self.nobody_home, "remote-tmp"))
        os.chown(os.path.join(self.nobody_home, "remote-tmp"), 65534, 65534)

    def setup_net(self):
        for ns in (SRV, CLI):
            run(["ip", "netns", "add", ns], check=True)
        run(["ip", "link", "add", "vsrv", "netns", SRV, "type", "veth", "peer", "name", "vcli", "netns", CLI], check=True)
        for ns, dev, addr in ((SRV, "vsrv", SRV4), (CLI, "vcli", CLI4)):
            run(in_ns(ns, "ip", "link", "set", "lo", "up"), check=True)
            run(in_ns(ns, "ip", "addr", "add", addr + "/24", "dev", dev), check=True)
            run(in_ns(ns, "ip", "link", "set", dev, "up"), check=True)

    def start_portd(self):
        config = os.path.join(self.tmp, "portd.yaml")
        with open(config, "w") as f:
            f.write(
                "version: 1\nsettings:\n  table: %s\n"
                '  socket: {path: %s, group: null, mode: "0666"}\n'
                "  state_dir: %s\n"
                "grants:\n  - user: nobody\n    ports: [80, 443]\n    to: \"1024-65535\"\n"
                % (TABLE, self.socket, os.path.join(self.tmp, "state"))
            )
        log = open(os.path.join(self.tmp, "portd.log"), "w")
        self.portd = subprocess.Popen(in_ns(SRV, self.portd_bin, "--config", config), stdout=log, stderr=log)
        self.procs.append(self.portd)
        deadline = time.time() + 10
        while not os.path.exists(self.socket):
            if self.portd.poll() is not None or time.time() > deadline:
                raise Fatal("portd did not come up; its log:\n" + self.portd_log())
            time.sleep(0.05)

    def portd_log(self):
        with open(os.path.join(self.tmp, "portd.log")) as f:
            return f.read()

    def stop_portd(self):
        self.portd.send_signal(signal.SIGTERM)
        self.portd.wait(timeout=10)

    def app(self, port, reply, user=None):
        """A TCP server in the server namespace that answers `reply`, run as `user` if given."""
        as_user = ["setpriv", "--reuid=%s" % user, "--regid=nogroup", "--clear-groups"] if user else []
        proc = subprocess.Popen(
            in_ns(SRV, *as_user, "socat", "TCP-LISTEN:%d,fork,reuseaddr" % port, "SYSTEM:echo %s" % reply),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.procs.append(proc)
        deadline = time.time() + 10
        while len(run(in_ns(SRV, "ss", "-Htln", "sport = :%d" % port)).stdout.strip()) == 0:
            if time.time() > deadline:
                raise Fatal("socat did not listen on %d in %s" % (port, SRV))
            time.sleep(0.05)

    def get(self, port):
        """What a client in the other namespace reads from the server's `port`, or None."""
        p = run(in_ns(CLI, "timeout", "3", "socat", "-T2", "-", "TCP:%s:%d,connect-timeout=2" % (SRV4, port)))
        out = p.stdout.strip()
        return out if p.returncode == 0 and out else None

    def table(self):
        p = run(in_ns(SRV, "nft", "list", "table", "inet", TABLE))
        return p.stdout if p.returncode == 0 else None

    def status(self):
        p = run([self.portctl, "--socket", self.socket, "--json", "status"], check=True)
        return json.loads(p.stdout)

    def ansible_env(self, home):
        env = dict(os.environ)
        env.pop("PORTD_SOCKET", None)
        env.update(
            HOME=home,
            ANSIBLE_HOME=os.path.join(home, ".ansible"),
            ANSIBLE_LOCAL_TEMP=os.path.join(home, "local-tmp"),
            ANSIBLE_REMOTE_TEMP=os.path.join(home, "remote-tmp"),
            ANSIBLE_COLLECTIONS_PATH=COLLECTIONS,
            ANSIBLE_LOCALHOST_WARNING="False",
            ANSIBLE_INVENTORY_UNPARSED_WARNING="False",
            ANSIBLE_RETRY_FILES_ENABLED="False",
            ANSIBLE_NOCOLOR="1",
            ANSIBLE_PYTHON_INTERPRETER=sys.executable,
        )
        return env

    def playbook(self, params, *flags, user=None):
        """Runs one task of portd.portd.forwards, as `user` through become when given;
        returns (task result, stats, raw output)."""
        params = dict(params)
        params.setdefault("socket", self.socket)
        params.setdefault("portctl", self.portctl)
        task = {"name": "forwards", "portd.portd.forwards": params}
        if user:
            # su, as sudo is not installed everywhere; nobody's login shell is nologin.
            task.update(become=True, become_user=user, become_method="su", become_flags="-s /bin/sh")
        play = [{"name": "portd forwards", "hosts": "localhost", "gather_facts": False, "tasks": [task]}]
        fd, path = tempfile.mkstemp(prefix="play-", suffix=".yml", dir=self.tmp)
        with os.fdopen(fd, "w") as f:
            json.dump(play, f, indent=2)
        os.chmod(path, 0o644)
        cmd = [os.path.join(VENV_BIN, "ansible-playbook"), "-i", "localhost,", "-c", "local", path] + list(flags)
        home = self.tmp
        record = os.path.join(home, "record.json")
        if os.path.exists(record):
            os.remove(record)
        env = self.ansible_env(home)
        if user:
            # The module runs as `user` and writes its temporary files there.
            env.update(ANSIBLE_REMOTE_TEMP=os.path.join(self.nobody_home, "remote-tmp"))
        env.update(
            ANSIBLE_CALLBACK_PLUGINS=os.path.join(ROOT, "tests", "ansible", "callback_plugins"),
            ANSIBLE_CALLBACKS_ENABLED="record",
            PORTD_ANSIBLE_RECORD=record,
        )
        proc = run(cmd, env=env, cwd=home)
        try:
            with open(record) as f:
                out = json.load(f)
            task = dict(out["tasks"][0]["result"])
            # The result handed to callbacks lacks `failed`; the callback's status has it.
            task["failed"] = out["tasks"][0]["status"] == "failed"
            stats = out["stats"]["localhost"]
        except (OSError, ValueError, KeyError, IndexError) as e:
            raise Fatal("ansible-playbook gave no task result (%s); exit %d\n%s\n%s" % (e, proc.returncode, proc.stdout, proc.stderr))
        return task, stats, proc

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        pids = run(["ip", "netns", "pids", SRV]).stdout.split()
        for pid in pids:
            run(["kill", "-9", pid])
        for ns in (SRV, CLI):
            run(["ip", "netns", "del", ns])
        shutil.rmtree(self.tmp, ignore_errors=True)


def diff_of(task):
    d = task.get("diff") or {}
    if isinstance(d, list):
        d = d[0] if d else {}
    return d.get("before", ""), d.get("after", "")


def names(placed):
    return sorted((p["owner"], p["forward"]["name"]) for p in placed)


def tooling(w, r):
    """ansible-doc, ansible-galaxy build/install, the example playbook, ansible-test sanity."""
    env = w.ansible_env(w.tmp)
    doc = run([os.path.join(VENV_BIN, "ansible-doc"), "portd.portd.forwards"], env=env)
    r.check(
        "ansible-doc renders portd.portd.forwards",
        doc.returncode == 0 and all(s in doc.stdout for s in ("OPTIONS", "EXAMPLES", "RETURN VALUES", "check_mode")),
        doc.stdout[-2000:] + doc.stderr,
    )
    js = run([os.path.join(VENV_BIN, "ansible-doc"), "--json", "portd.portd.forwards"], env=env)
    try:
        options = set(json.loads(js.stdout)["portd.portd.forwards"]["doc"]["options"])
    except (ValueError, KeyError) as e:
        options = "unreadable: %s %s" % (e, js.stderr)
    r.check(
        "ansible-doc --json lists the options",
        options == {"forwards", "src", "state", "owner", "socket", "portctl"},
        options,
    )

    out = os.path.join(w.tmp, "build")
    build = run([os.path.join(VENV_BIN, "ansible-galaxy"), "collection", "build", COLLECTION, "--output-path", out], env=env)
    tars = glob.glob(os.path.join(out, "portd-portd-*.tar.gz"))
    members = []
    if tars:
        with tarfile.open(tars[0]) as t:
            members = t.getnames()
    wanted = {"MANIFEST.json", "FILES.json", "plugins/modules/forwards.py", "roles/install/tasks/main.yml", "meta/runtime.yml"}
    r.check(
        "ansible-galaxy collection build packs the module and the role",
        build.returncode == 0 and len(tars) == 1 and wanted <= set(members)
        and not any(m.startswith("tests/output") for m in members),
        "%s %s\n%s" % (build.stdout, build.stderr, members),
    )
    if tars:
        dest = os.path.join(w.tmp, "installed")
        env2 = dict(env, ANSIBLE_COLLECTIONS_PATH=dest)
        inst = run([os.path.join(VENV_BIN, "ansible-galaxy"), "collection", "install", tars[0], "-p", dest], env=env2)
        doc2 = run([os.path.join(VENV_BIN, "ansible-doc"), "portd.portd.forwards"], env=env2)
        r.check(
            "the built collection installs and its module documentation renders",
            inst.returncode == 0 and doc2.returncode == 0 and "portd.portd.forwards" in doc2.stdout
            and os.path.isfile(os.path.join(dest, "ansible_collections", "portd", "portd", "plugins", "modules", "forwards.py")),
            inst.stdout + inst.stderr + doc2.stderr,
        )

    syntax = run(
        [os.path.join(VENV_BIN, "ansible-playbook"), "--syntax-check", "-i", "localhost,",
         os.path.join(COLLECTIONS, "playbooks", "install.yml")],
        env=env,
    )
    r.check("the example playbook and role pass --syntax-check", syntax.returncode == 0, syntax.stdout + syntax.stderr)

    sanity(r)


def sanity(r):
    """ansible-test sanity in the collection, with every sanity test's requirements.

    ansible-test makes one virtual environment per test and bootstraps pip into it with a
    get-pip.py it downloads from a host outside the package registries; a stand-in
    (tests/ansible/get_pip.py: ensurepip, then pip from the index) is put in its cache,
    under a HOME of its own in target/ so that the environments are kept between runs.
    """
    home = os.path.join(ROOT, "target", "ansible-test-home")
    bootstrap = os.path.join(
        os.path.dirname(VENV_BIN), "lib", "python%d.%d" % sys.version_info[:2], "site-packages",
        "ansible_test", "_util", "target", "setup", "bootstrap.sh",
    )
    with open(bootstrap) as f:
        m = re.search(r"get-pip-([0-9.]+)\.py", f.read())
    if not m:
        raise Fatal("cannot find the pip version ansible-test bootstraps in %s" % bootstrap)
    cache = os.path.join(home, ".ansible", "test", "cache")
    os.makedirs(cache, exist_ok=True)
    shutil.copy(os.path.join(ROOT, "tests", "ansible", "get_pip.py"), os.path.join(cache, "get_pip_%s.py" % m.group(1).replace(".", "_")))
    output = os.path.join(COLLECTION, "tests", "output")
    shutil.rmtree(output, ignore_errors=True)
    env = dict(os.environ, HOME=home)
    cmd = [os.path.join(VENV_BIN, "ansible-test"), "sanity", "--requirements", "--python", "%d.%d" % sys.version_info[:2]]
    t = time.time()
    proc = run(cmd, env=env, cwd=COLLECTION)
    shutil.rmtree(output, ignore_errors=True)
    lines = [l for l in (proc.stdout + proc.stderr).splitlines() if re.match(r"(ERROR|FATAL|Running sanity test)", l)]
    print("      ansible-test sanity: %d tests run in %.0f s" % (sum(l.startswith("Running") for l in lines), time.time() - t))
    r.check("ansible-test sanity passes", proc.returncode == 0, "\n".join(lines[-40:]) or proc.stdout[-3000:] + proc.stderr[-3000:])


def module(w, r):
    """The module against a real portd."""
    http = {"name": "http", "port": 80, "to": 8080, "family": "ipv4"}
    r.check("before any apply nothing answers on port 80", w.get(80) is None, w.get(80))

    task, stats, proc = w.playbook({"forwards": [http]})
    r.check(
        "first run: changed, portd added http",
        task.get("changed") is True and not task.get("failed") and stats["changed"] == 1
        and names(task["summary"]["added"]) == [("user:root", "http")],
        task or proc.stderr,
    )
    r.check("first run: the client reaches the app on 8080 through port 80", w.get(80) == "app-8080", w.get(80))

    task, stats, proc = w.playbook({"forwards": [http]})
    r.check(
        "second run: not changed",
        task.get("changed") is False and not task.get("failed") and stats["changed"] == 0
        and not any(task["summary"][k] for k in ("added", "removed", "changed")),
        task or proc.stderr,
    )

    rules = os.path.join(w.tmp, "rules.yaml")
    with open(rules, "w") as f:
        f.write("version: 1\nforwards:\n  - name: http\n    port: 80\n    to: 8080\n    family: ipv4\n")
    task, stats, proc = w.playbook({"src": rules})
    r.check("src: the same forwards from a rules file on the host are not a change", task.get("changed") is False and not task.get("failed"), task)
    with open(rules, "a") as f:
        f.write("  - name: http\n    port: 81\n    to: 8081\n")
    task, stats, proc = w.playbook({"src": rules})
    r.check(
        "src: errors name the host's rules file with line and column",
        task.get("failed") is True and task.get("reason") == "rejected"
        and re.search(re.escape(rules) + r":7:\d+: forwards\[1\]\.name: duplicate name `http`", task.get("msg", "")) is not None,
        task,
    )

    retarget = dict(http, to=8081)
    before = w.table()
    task, stats, proc = w.playbook({"forwards": [retarget]}, "--check", "--diff")
    after = w.table()
    d_before, d_after = diff_of(task)
    r.check(
        "check mode with a retarget: changed, dry run, portd lists http as changed",
        task.get("changed") is True and task.get("dry_run") is True and not task.get("failed")
        and [(c["old"]["forward"]["to"], c["new"]["forward"]["to"]) for c in task["summary"]["changed"]] == [(8080, 8081)],
        task,
    )
    r.check(
        "check mode --diff: before has to: 8080, after has to: 8081",
        "to: 8080" in d_before and "to: 8081" in d_after and "to: 8081" not in d_before and "- name: http\n" in d_after,
        "before:\n%s\nafter:\n%s" % (d_before, d_after),
    )
    r.check("check mode: the kernel's table is exactly as before", before is not None and before == after, "%s\n---\n%s" % (before, after))
    r.check("check mode: traffic still reaches 8080", w.get(80) == "app-8080", w.get(80))

    task, stats, proc = w.playbook({"forwards": [retarget]}, "--diff")
    d_before, d_after = diff_of(task)
    r.check(
        "real retarget: changed, with the same diff",
        task.get("changed") is True and task.get("dry_run") is False and "to: 8080" in d_before and "to: 8081" in d_after,
        task,
    )
    r.check("real retarget: the client now reaches the app on 8081", w.get(80) == "app-8081", w.get(80))

    before = w.table()
    task, stats, proc = w.playbook({"forwards": [dict(http, port=70000)]})
    msg = task.get("msg", "")
    r.check(
        "invalid port 70000: fails with portd's located error",
        task.get("failed") is True and task.get("rc") == 1 and task.get("reason") == "rejected"
        and re.search(r"forwards\.yaml:4:11: forwards\[0\]\.port: 70000 is not a port \(1-65535\)", msg) is not None,
        task,
    )
    r.check("invalid port: the kernel's table is unchanged", before is not None and before == w.table())
    r.check("invalid port: traffic still reaches 8081", w.get(80) == "app-8081", w.get(80))

    # portd refuses a user forward to a port another uid listens on, so nobody's app runs
    # as nobody; it starts after the apply, which portd answers with a warning.
    https = {"name": "https", "port": 443, "to": 8082, "family": "ipv4"}
    task, stats, proc = w.playbook({"forwards": [https]}, user="nobody")
    r.check(
        "become user nobody, within its grant: changed, owner user:nobody",
        task.get("changed") is True and names(task.get("summary", {}).get("added", [])) == [("user:nobody", "https")],
        task or proc.stderr,
    )
    r.check(
        "portd's warning (nothing listens on 8082 yet) is a warning of the task",
        any("nothing listens on 8082/tcp yet" in x for x in task.get("warnings", [])),
        task.get("warnings"),
    )
    w.app(8082, "app-8082", user="nobody")
    r.check("become user nobody: the client reaches nobody's app on 8082 through 443", w.get(443) == "app-8082", w.get(443))

    before = w.table()
    task, stats, proc = w.playbook({"forwards": [https, {"name": "alt", "port": 8443, "to": 8082}]}, user="nobody")
    r.check(
        "become user nobody, outside its grant: fails as permission denied",
        task.get("failed") is True and task.get("rc") == 4 and task.get("reason") == "denied"
        and task.get("msg", "").startswith("permission denied:"),
        task,
    )
    r.check("permission denied: the kernel's table is unchanged", before == w.table())

    task, stats, proc = w.playbook({"state": "absent", "owner": "user:nobody"})
    r.check(
        "root with owner user:nobody, state absent: removes nobody's https only",
        task.get("changed") is True and names(task["summary"]["removed"]) == [("user:nobody", "https")]
        and [f["forward"]["name"] for f in w.status()["forwards"]] == ["http"],
        task,
    )

    task, stats, proc = w.playbook({"state": "absent"}, "--diff")
    d_before, d_after = diff_of(task)
    r.check(
        "state absent: changed, http removed, the set is empty",
        task.get("changed") is True and names(task["summary"]["removed"]) == [("user:root", "http")]
        and w.status()["forwards"] == [] and "- name: http\n" in d_before and d_after == "",
        task,
    )
    r.check("state absent: nothing answers on port 80 any more", w.get(80) is None, w.get(80))
    task, stats, proc = w.playbook({"state": "absent"})
    r.check("state absent again: not changed", task.get("changed") is False and not task.get("failed"), task)

    task, stats, proc = w.playbook({"forwards": [http], "portctl": os.path.join(w.tmp, "no-such-portctl")})
    r.check(
        "a wrong portctl path fails saying so",
        task.get("failed") is True and "is not an executable file" in task.get("msg", ""),
        task,
    )

    w.stop_portd()
    task, stats, proc = w.playbook({"forwards": [http]})
    r.check(
        "portd stopped: fails as unreachable, naming the socket",
        task.get("failed") is True and task.get("rc") == 3 and task.get("reason") == "unreachable"
        and task.get("msg", "").startswith("portd is unreachable at %s:" % w.socket),
        task,
    )


def main():
    r = Results()
    w = None

    def stop(signum, _frame):
        raise SystemExit("tests/ansible: stopped by signal %d" % signum)

    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, stop)
    started = time.time()
    try:
        require_tools()
        w = World()
        tooling(w, r)
        w.setup_net()
        w.start_portd()
        w.app(8080, "app-8080")
        w.app(8081, "app-8081")
        module(w, r)
    except Fatal as e:
        r.check("the Ansible test could run to its end", False, e)
    finally:
        if w is not None:
            w.close()
    print("tests/ansible took %.0f s" % (time.time() - started))
    print("ansible: %d passed, %d failed" % (r.passed, len(r.failed)))
    sys.exit(1 if r.failed else 0)


if __name__ == "__main__":
    main()
