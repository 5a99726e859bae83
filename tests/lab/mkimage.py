#!/usr/bin/env python3
"""Build a tiny single-layer image as an OCI image layout (stdlib only).

Usage: mkimage.py [--arch ARCH] [--os OS] [--layer-bytes N] [--index | --docker]
                   LAYOUT_DIR TAG SEED

The layer is a gzip'd tar holding `pullgate-lab/seed` (its text depends on
SEED) and, with --layer-bytes, `pullgate-lab/filler` (N bytes derived from
SEED, incompressible so the blob really is that big -- handy for tests that
need a pull to take a while).

Everything is deterministic (fixed mtimes, uid/gid 0, gzip mtime 0): the same
SEED always yields the same manifest digest and different seeds yield
different digests. That lets tests push the "same" image twice and expect
the same digest, and needs no network or container tooling.

By default TAG names one OCI image manifest. --index tags an OCI image index
instead, listing that manifest for ARCH plus a second platform (so a client
really has to pick one); --docker writes Docker schema2 media types throughout
(manifest, config, layer), as `docker push` does. skopeo's oci: transport only
reads OCI media types, so --docker writes LAYOUT_DIR in skopeo's dir: format
(manifest.json plus blobs named by hex digest) instead; push it as dir:LAYOUT_DIR.

Prints the digest of what TAG names ("sha256:...") on stdout. That digest is computed
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
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
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


def build_manifest(layout: str, arch: str, os_name: str, seed: str, layer: bytes, tar: bytes,
                   docker: bool) -> bytes:
    config = canonical_json({
        "architecture": arch,
        "os": os_name,
        "created": EPOCH,
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Labels": {"dev.pullgate.lab.seed": seed},
        },
        # diff_ids are digests of the *uncompressed* layer tars.
        "rootfs": {"type": "layers", "diff_ids": [sha256(tar)]},
        "history": [{"created": EPOCH, "created_by": "pullgate tests/lab/mkimage.py"}],
    })
    config_digest = write_blob(layout, config)
    mt_manifest, mt_config, mt_layer = (
        (DOCKER_MANIFEST, DOCKER_CONFIG, DOCKER_LAYER) if docker else (MT_MANIFEST, MT_CONFIG, MT_LAYER))
    manifest = canonical_json({
        "schemaVersion": 2,
        "mediaType": mt_manifest,
        "config": {"mediaType": mt_config, "digest": config_digest, "size": len(config)},
        "layers": [{"mediaType": mt_layer, "digest": sha256(layer), "size": len(layer)}],
    })
    write_blob(layout, manifest)
    return manifest


def write_dir_transport(layout: str, manifest: bytes, blobs) -> None:
    # skopeo's dir: format takes the manifest bytes as they are, whatever their media type.
    for data in blobs:
        with open(os.path.join(layout, sha256(data).split(":", 1)[1]), "wb") as f:
            f.write(data)
    with open(os.path.join(layout, "manifest.json"), "wb") as f:
        f.write(manifest)
    with open(os.path.join(layout, "version"), "w") as f:
        f.write("Directory Transport Version: 1.1\n")


def write_oci_layout(layout: str, top: dict, tag: str) -> None:
    # skopeo's oci:LAYOUT:TAG reference resolves through this name.
    top["annotations"] = {"org.opencontainers.image.ref.name": tag}
    layout_index = {"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": [top]}
    with open(os.path.join(layout, "index.json"), "wb") as f:
        f.write(canonical_json(layout_index))
    with open(os.path.join(layout, "oci-layout"), "wb") as f:
        f.write(canonical_json({"imageLayoutVersion": "1.0.0"}))


def platform_entry(manifest: bytes, media_type: str, arch: str, os_name: str) -> dict:
    return {
        "mediaType": media_type,
        "digest": sha256(manifest),
        "size": len(manifest),
        "platform": {"architecture": arch, "os": os_name},
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="amd64")
    p.add_argument("--os", default="linux")
    p.add_argument("--layer-bytes", type=int, default=0)
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--index", action="store_true")
    kind.add_argument("--docker", action="store_true")
    p.add_argument("layout")
    p.add_argument("tag")
    p.add_argument("seed")
    a = p.parse_args()

    os.makedirs(os.path.join(a.layout, "blobs", "sha256"), exist_ok=True)

    tar = build_layer(a.seed, a.layer_bytes)
    layer = gzip_bytes(tar)
    write_blob(a.layout, layer)

    manifest = build_manifest(a.layout, a.arch, a.os, a.seed, layer, tar, a.docker)
    top_type = DOCKER_MANIFEST if a.docker else MT_MANIFEST
    top = platform_entry(manifest, top_type, a.arch, a.os)
    if a.index:
        # A second platform whose config differs only in architecture: a client
        # that ignored the platform list would get a different image id.
        other = "arm64" if a.arch != "arm64" else "amd64"
        other_manifest = build_manifest(a.layout, other, a.os, a.seed, layer, tar, False)
        index = canonical_json({
            "schemaVersion": 2,
            "mediaType": MT_INDEX,
            "manifests": [top, platform_entry(other_manifest, MT_MANIFEST, other, a.os)],
        })
        top = {"mediaType": MT_INDEX, "digest": write_blob(a.layout, index), "size": len(index)}

    if a.docker:
        config_blob = json.loads(manifest)["config"]["digest"].split(":", 1)[1]
        with open(os.path.join(a.layout, "blobs", "sha256", config_blob), "rb") as f:
            write_dir_transport(a.layout, manifest, [f.read(), layer])
    else:
        write_oci_layout(a.layout, top, a.tag)
    print(top["digest"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
