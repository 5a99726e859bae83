#!/usr/bin/env python3
"""Build a tiny single-layer OCI image as an OCI image layout (stdlib only).

Usage: mkimage.py [--arch ARCH] [--os OS] [--layer-bytes N] LAYOUT_DIR TAG SEED

The layer is a gzip'd tar holding `pullgate-lab/seed` (its text depends on
SEED) and, with --layer-bytes, `pullgate-lab/filler` (N bytes derived from
SEED, incompressible so the blob really is that big -- handy for tests that
need a pull to take a while).

Everything is deterministic (fixed mtimes, uid/gid 0, gzip mtime 0): the same
SEED always yields the same manifest digest and different seeds yield
different digests. That lets tests push the "same" image twice and expect
the same digest, and needs no network or container tooling.

Prints the manifest digest ("sha256:...") on stdout. That digest is computed
over the exact manifest bytes stored in the layout, which are what the
registry serves as long as the copy preserves them (skopeo --preserve-digests).
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import sys
import tarfile

MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
MT_INDEX = "application/vnd.oci.image.index.v1+json"
# A fixed timestamp keeps the config (and so every digest) reproducible.
EPOCH = "1970-01-01T00:00:00Z"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical_json(obj) -> bytes:
    # Sorted keys, no whitespace: stable bytes for stable digests.
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def filler(seed: str, n: int) -> bytes:
    # SHA-256 in counter mode: pseudo-random, so gzip cannot shrink it.
    out = bytearray()
    counter = 0
    while len(out) < n:
        out += hashlib.sha256(f"{seed}/{counter}".encode()).digest()
        counter += 1
    return bytes(out[:n])


def tar_entry(tar: tarfile.TarFile, name: str, data: bytes = None) -> None:
    info = tarfile.TarInfo(name)
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if data is None:
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
        tar.addfile(info)
    else:
        info.mode = 0o644
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def build_layer(seed: str, layer_bytes: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar_entry(tar, "pullgate-lab")
        tar_entry(tar, "pullgate-lab/seed", f"pullgate-lab seed: {seed}\n".encode())
        if layer_bytes > 0:
            tar_entry(tar, "pullgate-lab/filler", filler(seed, layer_bytes))
    return buf.getvalue()


def gzip_bytes(data: bytes) -> bytes:
    buf = io.BytesIO()
    # filename="" and mtime=0 keep the gzip header free of varying fields.
    with gzip.GzipFile(filename="", fileobj=buf, mode="wb", mtime=0) as gz:
        gz.write(data)
    return buf.getvalue()


def write_blob(layout: str, data: bytes) -> str:
    digest = sha256(data)
    path = os.path.join(layout, "blobs", "sha256", digest.split(":", 1)[1])
    with open(path, "wb") as f:
        f.write(data)
    return digest


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="amd64")
    p.add_argument("--os", default="linux")
    p.add_argument("--layer-bytes", type=int, default=0)
    p.add_argument("layout")
    p.add_argument("tag")
    p.add_argument("seed")
    a = p.parse_args()

    os.makedirs(os.path.join(a.layout, "blobs", "sha256"), exist_ok=True)

    tar = build_layer(a.seed, a.layer_bytes)
    layer = gzip_bytes(tar)
    layer_digest = write_blob(a.layout, layer)

    config = canonical_json({
        "architecture": a.arch,
        "os": a.os,
        "created": EPOCH,
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Labels": {"dev.pullgate.lab.seed": a.seed},
        },
        # diff_ids are digests of the *uncompressed* layer tars.
        "rootfs": {"type": "layers", "diff_ids": [sha256(tar)]},
        "history": [{"created": EPOCH, "created_by": "pullgate tests/lab/mkimage.py"}],
    })
    config_digest = write_blob(a.layout, config)

    manifest = canonical_json({
        "schemaVersion": 2,
        "mediaType": MT_MANIFEST,
        "config": {"mediaType": MT_CONFIG, "digest": config_digest, "size": len(config)},
        "layers": [{"mediaType": MT_LAYER, "digest": layer_digest, "size": len(layer)}],
    })
    manifest_digest = write_blob(a.layout, manifest)

    index = {
        "schemaVersion": 2,
        "mediaType": MT_INDEX,
        "manifests": [{
            "mediaType": MT_MANIFEST,
            "digest": manifest_digest,
            "size": len(manifest),
            "platform": {"architecture": a.arch, "os": a.os},
            # skopeo's oci:LAYOUT:TAG reference resolves through this name.
            "annotations": {"org.opencontainers.image.ref.name": a.tag},
        }],
    }
    with open(os.path.join(a.layout, "index.json"), "wb") as f:
        f.write(canonical_json(index))
    with open(os.path.join(a.layout, "oci-layout"), "wb") as f:
        f.write(canonical_json({"imageLayoutVersion": "1.0.0"}))

    print(manifest_digest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
