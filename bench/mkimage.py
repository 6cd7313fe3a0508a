#!/usr/bin/env python3
"""Write a minimal linux/amd64 OCI image archive (stdlib only) for the runc side of `make bench`.

    mkimage.py --name localhost/bench/hello:latest --cmd /hello \
        --file /hello=PATH --file /sleep=PATH -o OUT.tar

One uncompressed tar layer holding the given files (mode 0755, root-owned, mtime 0) and the empty
mount-point directories wasmcell's layers hold, an image
config with the given Cmd, an OCI index naming the image (`io.containerd.image.name`, which
`ctr image import` uses) and Docker's `manifest.json` beside it. Reproducible: the same inputs
give the same bytes. Written to a temporary sibling and renamed.
"""

import argparse
import hashlib
import io
import json
import os
import tarfile


# The empty mount-point directories wasmcell's own image layers hold (oci::write::SKELETON_DIRS),
# so runc's container starts without creating them either.
SKELETON_DIRS = ["dev", "run"]


def tar_bytes(entries):
    """A tar of (name, data, mode) entries, data None for a directory, deterministic (sorted,
    mtime 0, root-owned)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data, mode in sorted(entries, key=lambda e: e[0]):
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                data = b""
            info.size = len(data)
            info.mode = mode
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def canonical(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--name", required=True, help="image reference, e.g. localhost/bench/hello:latest")
    ap.add_argument("--cmd", required=True, action="append", help="Cmd element (repeatable)")
    ap.add_argument("--file", required=True, action="append", help="/PATH/IN/IMAGE=HOST_PATH (repeatable)")
    ap.add_argument("-o", "--output", required=True)
    args = ap.parse_args()

    files = []
    for spec in args.file:
        dest, _, src = spec.partition("=")
        if not dest.startswith("/") or not src:
            ap.error(f"--file wants /PATH=HOST_PATH, got {spec!r}")
        with open(src, "rb") as f:
            files.append((dest.lstrip("/"), f.read(), 0o755))
    taken = {name for name, _, _ in files}
    files += [(d, None, 0o755) for d in SKELETON_DIRS if d not in taken]
    layer = tar_bytes(files)
    layer_digest = "sha256:" + hashlib.sha256(layer).hexdigest()

    config = canonical({
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {"Cmd": args.cmd, "Env": ["PATH=/"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "wasmcell bench/mkimage.py"}],
    })
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()

    manifest = canonical({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": len(config),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": layer_digest,
            "size": len(layer),
        }],
    })
    manifest_digest = "sha256:" + hashlib.sha256(manifest).hexdigest()

    tag = args.name.rsplit(":", 1)[1] if ":" in args.name.rsplit("/", 1)[-1] else "latest"
    index = canonical({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": len(manifest),
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {
                "io.containerd.image.name": args.name,
                "org.opencontainers.image.ref.name": tag,
            },
        }],
    })

    def blob(digest):
        return "blobs/sha256/" + digest.split(":", 1)[1]

    docker_manifest = canonical([{
        "Config": blob(config_digest),
        "RepoTags": [args.name],
        "Layers": [blob(layer_digest)],
    }])

    entries = [
        ("oci-layout", canonical({"imageLayoutVersion": "1.0.0"}), 0o644),
        ("index.json", index, 0o644),
        ("manifest.json", docker_manifest, 0o644),
        (blob(layer_digest), layer, 0o644),
        (blob(config_digest), config, 0o644),
        (blob(manifest_digest), manifest, 0o644),
    ]
    tmp = args.output + ".tmp"
    with open(tmp, "wb") as f:
        f.write(tar_bytes(entries))
    os.replace(tmp, args.output)


if __name__ == "__main__":
    main()
