#!/usr/bin/env python3
"""Sum the memory of every shim-side process of one private containerd (stdlib only).

    pss.py ADDRESS [RUNTIME]

Shims are the processes whose command line is `containerd-shim-* … -address ADDRESS …` (the
long-lived shim servers; the short-lived `start`/`delete` invocations are gone by the time this
runs), and wasmcell's starter (`wasmcell-shim-starter ADDRESS`, which forks new pods' shims)
unless RUNTIME is another runtime than wasmcell (the starter outlives wasmcell's containers).
The starter's children count with it: the servers it forked, and the spare servers
(`wasmcell-shim-spare ADDRESS`) waiting at it to serve the next container. The starter and the
spares are also summed apart (`starter`, `spares`): one per containerd and a passing pool, for a
figure about one container, which they are not part of.
Every descendant of a shim counts too: wasmcell's guest processes
(`containerd-shim-wasmcell-v1 __wasmcell-guest PLAN`), runc's container processes. Prints one
JSON object: process counts and Pss/Rss totals in KiB from /proc/PID/smaps_rollup, split by
role (shim, child) and by kind (anon, file, shmem), and each process's own figures.
"""

import json
import os
import sys

FIELDS = ("Rss", "Pss", "Pss_Anon", "Pss_File", "Pss_Shmem", "Private_Clean", "Private_Dirty",
          "Shared_Clean", "Shared_Dirty")


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def ppid(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    # comm may contain spaces and parentheses: fields start after the last ')'.
    return int(stat.rsplit(")", 1)[1].split()[1])


def rollup(pid):
    out = dict.fromkeys(FIELDS, 0)
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in out:
                    out[key] = int(rest.split()[0])  # kB
    except OSError:
        return None
    return out


def by_mapping(pid, top=8):
    """Pss/Rss in KiB of one process, summed per mapped path ([anon] for unnamed mappings)."""
    sums = {}
    name = None
    try:
        with open(f"/proc/{pid}/smaps") as f:
            for line in f:
                first = line.split(None, 5)
                if "-" in first[0] and len(first) >= 5 and ":" in first[3]:
                    name = first[5].strip() if len(first) > 5 else "[anon]"
                    sums.setdefault(name, {"Pss": 0, "Rss": 0})
                elif first[0] in ("Pss:", "Rss:") and name is not None:
                    sums[name][first[0][:-1]] += int(first[1])
    except OSError:
        return []
    ranked = sorted(sums.items(), key=lambda kv: -kv[1]["Pss"])[:top]
    return [{"mapping": k, "pss_kib": v["Pss"], "rss_kib": v["Rss"]} for k, v in ranked]


def main():
    address = sys.argv[1]
    runtime = sys.argv[2] if len(sys.argv) > 2 else "wasmcell"
    pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    parents = {p: ppid(p) for p in pids}
    shims = []
    starters = set()
    for p in pids:
        argv = cmdline(p)
        if (argv and os.path.basename(argv[0]).startswith("containerd-shim")
                and "-address" in argv and address in argv
                and "start" not in argv and "delete" not in argv):
            shims.append(p)
        elif argv[:2] == ["wasmcell-shim-starter", address] and runtime == "wasmcell":
            shims.append(p)  # wasmcell's starter: one per containerd, counted with the shims
            starters.add(p)
    shim_set = set(shims)
    children = {}
    # descendants of any shim (guests, container processes and anything they started)
    frontier = set(shims)
    while frontier:
        nxt = {p for p, pp in parents.items() if pp in frontier and p not in shim_set and p not in children}
        for p in nxt:
            children[p] = None
        frontier = nxt
    result = {"shims": 0, "children": 0, "processes": 0,
              "shim": dict.fromkeys(FIELDS, 0), "child": dict.fromkeys(FIELDS, 0),
              "total": dict.fromkeys(FIELDS, 0), "child_commands": {},
              "spares": dict(dict.fromkeys(FIELDS, 0), count=0),
              "starter": dict(dict.fromkeys(FIELDS, 0), count=0)}
    for role, group in (("shim", shims), ("child", list(children))):
        for p in group:
            r = rollup(p)
            if r is None:
                continue  # exited meanwhile
            result["shims" if role == "shim" else "children"] += 1
            for k in FIELDS:
                result[role][k] += r[k]
                result["total"][k] += r[k]
            result.setdefault("per_process", []).append(
                {"pid": p, "role": role, "Pss": r["Pss"], "Pss_Anon": r["Pss_Anon"],
                 "Pss_File": r["Pss_File"], "Rss": r["Rss"]})
            if p in starters:
                result["starter"]["count"] += 1
                for k in FIELDS:
                    result["starter"][k] += r[k]
            if role == "child":
                argv = cmdline(p)
                if argv[:1] == ["wasmcell-shim-spare"]:
                    result["spares"]["count"] += 1
                    for k in FIELDS:
                        result["spares"][k] += r[k]
                name = os.path.basename(argv[0]) if argv else "?"
                if len(argv) > 1 and argv[1].startswith("__"):
                    name += " " + argv[1]
                result["child_commands"][name] = result["child_commands"].get(name, 0) + 1
    result["processes"] = result["shims"] + result["children"]
    # where one process of each role spends its memory
    result["sample"] = {}
    for role, group in (("shim", shims), ("child", sorted(children))):
        if group:
            result["sample"][role] = {"pid": group[0], "command": " ".join(cmdline(group[0])[:2]),
                                      "rollup_kib": rollup(group[0]), "top_mappings": by_mapping(group[0])}
    json.dump(result, sys.stdout, sort_keys=True)
    print()


if __name__ == "__main__":
    main()
