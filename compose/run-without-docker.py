#!/usr/bin/env python3
"""Runs a compose lab without Docker, to check it where there is no Docker engine: every
service in its own network namespace, each compose network a Linux bridge (in a namespace
of its own), service names resolved through /etc/netns/<ns>/hosts, named volumes as
directories. It reads compose.yaml and the variant's file with the merge rules the labs use
(networks and volumes added, environment merged, other keys replaced), starts the services
in depends_on order, waits for client-a to finish, prints every service's output and stops
everything it started.

usage (root, iproute2):
  compose/run-without-docker.py plain|stunnel|mqbridge|mosquitto-bridge [--bin DIR] [--bench ARGS]
DIR holds mqbridge and mqbridge-bench (default: the debug build, .build/debug). --bench runs
the bench service with ARGS once client-a is done, as `docker compose run bench ARGS` would,
e.g. --bench "load --host bridge-a --port 1883 --qos 1".
"""
import argparse, os, shutil, signal, subprocess, sys, tempfile, time

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
PREFIX = "mql-"
CANNOT = 77  # exit status when this machine cannot make network namespaces


def merged(variant, profiles=()):
    with open(os.path.join(HERE, "compose.yaml")) as f:
        services = yaml.safe_load(f)["services"]
    with open(os.path.join(HERE, f"{variant}.yaml")) as f:
        override = yaml.safe_load(f)
    for name, service in (override.get("services") or {}).items():
        target = services.setdefault(name, {})
        for key, value in service.items():
            if key in ("networks", "volumes"):
                target[key] = list(dict.fromkeys(list(target.get(key) or []) + list(value)))
            elif key == "environment":
                target[key] = {**(target.get(key) or {}), **value}
            elif key == "depends_on":
                target[key] = {**conditions(target.get(key)), **conditions(value)}
            else:
                target[key] = value
    # Services behind a profile start only with `run`.
    return {n: s for n, s in services.items() if not s.get("profiles") or set(s["profiles"]) & set(profiles)}


def conditions(depends_on):
    """depends_on in either form (a list of names, or names with conditions) as a dict."""
    d = depends_on or {}
    return d if isinstance(d, dict) else {n: {"condition": "service_started"} for n in d}


def dependencies(service):
    return conditions(service.get("depends_on"))


def order(services):
    done, result = set(), []
    def visit(name):
        if name in done:
            return
        done.add(name)
        for dependency in dependencies(services[name]):
            visit(dependency)
        result.append(name)
    for name in services:
        visit(name)
    return result


def stop(processes):
    for process in processes.values():
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    for process in processes.values():
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def sh(*arguments, check=True):
    return subprocess.run(arguments, check=check, capture_output=True, text=True)


def main():
    global PREFIX
    parser = argparse.ArgumentParser()
    parser.add_argument("variant")
    parser.add_argument("--bin", default=os.path.join(HERE, "..", ".build", "debug"))
    parser.add_argument("--timeout", type=float, default=120)
    parser.add_argument("--bench", help="arguments for the bench service (mqbridge-bench)")
    parser.add_argument("--prefix", default=PREFIX, help="namespace name prefix (several labs at once)")
    options = parser.parse_args()
    PREFIX = options.prefix
    services = merged(options.variant, ["bench"] if options.bench else [])
    work = tempfile.mkdtemp(prefix="mqbridge-lab-")
    os.chmod(work, 0o755)
    lab = os.path.join(work, "lab")
    shutil.copytree(os.path.join(HERE, "lab"), lab)
    volumes = os.path.join(work, "volumes")
    # Paths inside the image become paths in the work directory, in configuration files too.
    def local(text):
        return text.replace("/exchange/", volumes + "/exchange/").replace("/lab/", lab + "/")
    for root, _, files in os.walk(lab):
        for name in files:
            path = os.path.join(root, name)
            with open(path) as f:
                text = f.read()
            with open(path, "w") as f:
                f.write(local(text))
    networks = sorted({n for s in services.values() for n in (s.get("networks") or [])})
    names = order(services)
    address = {}  # (service, network) -> IP
    processes, logs = {}, {}
    made = []
    try:
        try:
            sh("ip", "netns", "add", PREFIX + "switch")
        except (OSError, subprocess.CalledProcessError) as error:
            print(f"cannot create network namespaces here (needs root and iproute2): {getattr(error, 'stderr', error)}")
            return CANNOT
        made.append(PREFIX + "switch")
        for i, network in enumerate(networks):
            sh("ip", "-n", PREFIX + "switch", "link", "add", f"br{i}", "type", "bridge")
            sh("ip", "-n", PREFIX + "switch", "link", "set", f"br{i}", "up")
        for j, name in enumerate(names):
            ns = PREFIX + name
            sh("ip", "netns", "add", ns)
            made.append(ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            for network in services[name].get("networks") or []:
                i = networks.index(network)
                inside, outside = f"e{i}", f"s{j}n{i}"
                sh("ip", "link", "add", inside, "netns", ns, "type", "veth", "peer", "name", outside, "netns", PREFIX + "switch")
                ip = f"10.79.{i}.{j + 10}"
                address[(name, network)] = ip
                sh("ip", "-n", ns, "addr", "add", ip + "/24", "dev", inside)
                sh("ip", "-n", ns, "link", "set", inside, "up")
                sh("ip", "-n", PREFIX + "switch", "link", "set", outside, "master", f"br{i}")
                sh("ip", "-n", PREFIX + "switch", "link", "set", outside, "up")
        for name in names:
            lines = ["127.0.0.1 localhost", f"127.0.1.1 {name}"]
            mine = services[name].get("networks") or []
            for other in names:
                shared = [n for n in mine if (other, n) in address]
                if other != name and shared:
                    lines.append(f"{address[(other, shared[0])]} {other}")
            os.makedirs(f"/etc/netns/{PREFIX}{name}", exist_ok=True)
            with open(f"/etc/netns/{PREFIX}{name}/hosts", "w") as f:
                f.write("\n".join(lines) + "\n")
        environment_base = dict(os.environ, PATH=os.path.abspath(options.bin) + ":" + os.environ["PATH"], LAB=lab)
        for name in names:
            service = services[name]
            if name == "bench":
                continue  # run once client-a is done (below)
            for dependency, how in dependencies(service).items():
                if how.get("condition") == "service_completed_successfully":
                    code = processes[dependency].wait(timeout=60)
                    if code != 0:
                        raise SystemExit(f"{dependency} exited with {code}")
            environment = dict(environment_base)
            environment.update({k: str(v) for k, v in (service.get("environment") or {}).items()})
            for volume in service.get("volumes") or []:
                source, target = volume.split(":")[:2]
                path = os.path.join(volumes, source)
                os.makedirs(path, exist_ok=True)
                os.chmod(path, 0o777)
                environment[target.strip("/").upper()] = path
            command = [local(a) for a in (service.get("entrypoint") or []) + service["command"]]
            logs[name] = open(os.path.join(work, name + ".log"), "w+", errors="replace")
            processes[name] = subprocess.Popen(["ip", "netns", "exec", PREFIX + name] + command, env=environment,
                                               stdout=logs[name], stderr=subprocess.STDOUT, start_new_session=True)
            time.sleep(0.3)
        deadline = time.time() + options.timeout
        while processes["client-a"].poll() is None and time.time() < deadline:
            time.sleep(0.5)
        time.sleep(1)
        status = processes["client-a"].poll()
        if options.bench:
            command = services["bench"]["entrypoint"] + options.bench.split()
            print("bench | " + " ".join(command), flush=True)
            subprocess.run(["ip", "netns", "exec", PREFIX + "bench"] + command, env=environment_base)
        stop(processes)
        # After the stop: mosquitto and mosquitto_sub flush their output when they exit.
        for name in logs:  # in start order
            logs[name].seek(0)
            for line in logs[name].read().splitlines():
                print(f"{name:>10} | {line}")
        print(f"client-a exited with {status}")
        return 0 if status == 0 else 1
    finally:
        stop(processes)
        for ns in made:
            sh("ip", "netns", "del", ns, check=False)
            shutil.rmtree(f"/etc/netns/{ns}", ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
