#!/usr/bin/env python3
"""Sign an image in a lab registry the way cosign does (key-based, no transparency log).

  cosign_sign.py keygen DIR
      Write DIR/demo.key (ECDSA P-256, PKCS#8 PEM, unencrypted) and DIR/demo.pub
      (SubjectPublicKeyInfo PEM, "PUBLIC KEY") -- the public half is what a
      pullgate policy lists under `keys`.
  cosign_sign.py sign --key KEY --registry HOST:PORT --repo NAME --digest sha256:HEX [--creds USER:PASS]
      Build cosign's simple-signing payload for HOST:PORT/NAME@DIGEST, sign it
      (ECDSA, SHA-256, DER) and push the signature manifest to
      HOST:PORT/NAME:sha256-HEX.sig with skopeo. Prints that tag's digest.
  cosign_sign.py verify --key PUB --registry HOST:PORT --repo NAME --digest sha256:HEX [--creds USER:PASS]
      Independent check of what `sign` pushed: fetch the .sig manifest and its
      payload blobs back over plain HTTP and accept only if a layer's payload
      names HOST:PORT/NAME and DIGEST and its signature verifies with PUB.

What goes over the wire is the same as `cosign sign --key ... --tlog-upload=false`:
an OCI manifest whose single layer (mediaType
application/vnd.dev.cosign.simplesigning.v1+json) is the payload

  {"critical":{"identity":{"docker-reference":"HOST:PORT/NAME"},
               "image":{"docker-manifest-digest":"sha256:..."},
               "type":"cosign container image signature"},"optional":null}

with the base64 DER signature in the layer annotation
dev.cosignproject.cosign/signature. (cosign encrypts its own private key
files; ours are plain PKCS#8 because they only live in a throw-away lab.)

Needs Debian's python3-cryptography (import cryptography) and skopeo.
"""

import argparse
import base64
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from labutil import _no_proxy_opener, verify_manifest  # noqa: E402
from mkimage import MT_CONFIG, MT_INDEX, MT_MANIFEST, canonical_json, sha256, write_blob  # noqa: E402

try:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
except ImportError:
    raise SystemExit("cosign_sign.py: needs python3-cryptography (apt-get install python3-cryptography)")

MT_SIMPLESIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
ANN_SIGNATURE = "dev.cosignproject.cosign/signature"
PAYLOAD_TYPE = "cosign container image signature"
# cosign's signature images carry a config with zero-value fields and the
# payload's digest as the only diff_id.
ZERO_TIME = "0001-01-01T00:00:00Z"


def fail(msg: str):
    raise SystemExit(f"cosign_sign.py: {msg}")


def sig_tag(digest: str) -> str:
    algo, _, hexpart = digest.partition(":")
    if algo != "sha256" or len(hexpart) != 64 or any(c not in "0123456789abcdef" for c in hexpart):
        fail(f"--digest must be sha256:<64 lowercase hex>, got {digest!r}")
    return f"sha256-{hexpart}.sig"


def payload(docker_reference: str, digest: str) -> bytes:
    # canonical_json sorts keys, which happens to be exactly cosign's field
    # order, and uses no whitespace, as cosign does.
    return canonical_json({
        "critical": {
            "identity": {"docker-reference": docker_reference},
            "image": {"docker-manifest-digest": digest},
            "type": PAYLOAD_TYPE,
        },
        "optional": None,
    })


# ------------------------------------------------------------------ keygen --

def keygen(directory: str) -> None:
    os.makedirs(directory, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    key_path = os.path.join(directory, "demo.key")
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private)
    with open(os.path.join(directory, "demo.pub"), "wb") as f:
        f.write(public)


def load_private(path: str) -> ec.EllipticCurvePrivateKey:
    with open(path, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        fail(f"{path}: not an ECDSA P-256 private key")
    return key


def load_public(path: str) -> ec.EllipticCurvePublicKey:
    with open(path, "rb") as f:
        key = serialization.load_pem_public_key(f.read())
    if not isinstance(key, ec.EllipticCurvePublicKey):
        fail(f"{path}: not an ECDSA public key")
    return key


# -------------------------------------------------------------------- sign --

def build_layout(layout: str, tag: str, body: bytes, signature: bytes) -> str:
    """Write the signature image as an OCI layout; return its manifest digest."""
    os.makedirs(os.path.join(layout, "blobs", "sha256"), exist_ok=True)
    payload_digest = write_blob(layout, body)
    config = canonical_json({
        "architecture": "",
        "config": {},
        "created": ZERO_TIME,
        "history": [{"created": ZERO_TIME}],
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": [payload_digest]},
    })
    config_digest = write_blob(layout, config)
    manifest = canonical_json({
        "schemaVersion": 2,
        "mediaType": MT_MANIFEST,
        "config": {"mediaType": MT_CONFIG, "digest": config_digest, "size": len(config)},
        "layers": [{
            "mediaType": MT_SIMPLESIGNING,
            "digest": payload_digest,
            "size": len(body),
            "annotations": {ANN_SIGNATURE: base64.b64encode(signature).decode()},
        }],
    })
    manifest_digest = write_blob(layout, manifest)
    index = {
        "schemaVersion": 2,
        "mediaType": MT_INDEX,
        "manifests": [{
            "mediaType": MT_MANIFEST,
            "digest": manifest_digest,
            "size": len(manifest),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }],
    }
    with open(os.path.join(layout, "index.json"), "wb") as f:
        f.write(canonical_json(index))
    with open(os.path.join(layout, "oci-layout"), "wb") as f:
        f.write(canonical_json({"imageLayoutVersion": "1.0.0"}))
    return manifest_digest


def skopeo_push(work: str, layout: str, tag: str, dest: str, creds: str = None) -> None:
    # Same isolation as lab.sh push-image: no host policy, registries or auth files.
    policy = os.path.join(work, "policy.json")
    with open(policy, "w") as f:
        f.write('{"default":[{"type":"insecureAcceptAnything"}]}')
    registries_conf = os.path.join(work, "registries.conf")
    open(registries_conf, "w").close()
    registries_d = os.path.join(work, "registries.d")
    tmp = os.path.join(work, "tmp")
    os.makedirs(registries_d, exist_ok=True)
    os.makedirs(tmp, exist_ok=True)
    args = ["skopeo", "--policy", policy, "--registries.d", registries_d, "--tmpdir", tmp,
            "copy", "--quiet", "--retry-times", "2",
            # The manifest must reach the registry byte for byte: its digest is
            # what `sign` prints and what a verifier will see.
            "--preserve-digests", "--dest-tls-verify=false",
            "--dest-authfile", os.path.join(work, "auth.json")]
    if creds:
        args += ["--dest-creds", creds]
    args += [f"oci:{layout}:{tag}", f"docker://{dest}"]
    env = dict(os.environ, CONTAINERS_REGISTRIES_CONF=registries_conf)
    # skopeo's chatter goes to stderr: stdout carries only the digest.
    if subprocess.run(args, env=env, stdout=sys.stderr).returncode != 0:
        fail(f"skopeo failed to push {dest}")


def sign(a) -> None:
    tag = sig_tag(a.digest)
    key = load_private(a.key)
    body = payload(f"{a.registry}/{a.repo}", a.digest)
    signature = key.sign(body, ec.ECDSA(hashes.SHA256()))  # DER, as cosign
    with tempfile.TemporaryDirectory(prefix="cosign-sign.") as work:
        layout = os.path.join(work, "layout")
        manifest_digest = build_layout(layout, tag, body, signature)
        skopeo_push(work, layout, tag, f"{a.registry}/{a.repo}:{tag}", a.creds)
    verify_manifest(a.registry, a.repo, tag, manifest_digest, a.creds)
    print(manifest_digest)


# ------------------------------------------------------------------ verify --

def http_get(url: str, accept: str = None, creds: str = None) -> bytes:
    req = urllib.request.Request(url)
    if accept:
        req.add_header("Accept", accept)
    if creds:
        req.add_header("Authorization", "Basic " + base64.b64encode(creds.encode()).decode())
    with _no_proxy_opener().open(req, timeout=10) as r:
        return r.read()


def verify(a) -> None:
    tag = sig_tag(a.digest)
    key = load_public(a.key)
    base = f"http://{a.registry}/v2/{a.repo}"
    manifest = json.loads(http_get(f"{base}/manifests/{tag}", MT_MANIFEST, a.creds))
    expected_ref = f"{a.registry}/{a.repo}"
    problems = []
    for i, layer in enumerate(manifest.get("layers", [])):
        if layer.get("mediaType") != MT_SIMPLESIGNING:
            problems.append(f"layer {i}: mediaType {layer.get('mediaType')!r}")
            continue
        body = http_get(f"{base}/blobs/{layer['digest']}", creds=a.creds)
        if sha256(body) != layer["digest"] or len(body) != layer.get("size"):
            problems.append(f"layer {i}: blob does not match its descriptor")
            continue
        sig_b64 = (layer.get("annotations") or {}).get(ANN_SIGNATURE)
        if not sig_b64:
            problems.append(f"layer {i}: no {ANN_SIGNATURE} annotation")
            continue
        try:
            key.verify(base64.b64decode(sig_b64, validate=True), body, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError):
            problems.append(f"layer {i}: signature does not verify with {a.key}")
            continue
        critical = json.loads(body).get("critical", {})
        got = (critical.get("type"), critical.get("identity", {}).get("docker-reference"),
               critical.get("image", {}).get("docker-manifest-digest"))
        if got != (PAYLOAD_TYPE, expected_ref, a.digest):
            problems.append(f"layer {i}: payload says {got}")
            continue
        print(f"ok: {expected_ref}@{a.digest} signed by {a.key} (layer {layer['digest']})")
        return
    fail(f"no valid signature in {a.registry}/{a.repo}:{tag}: " + ("; ".join(problems) or "no layers"))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    k = sub.add_parser("keygen", help="write DIR/demo.key and DIR/demo.pub")
    k.add_argument("dir")
    for name, key_help in (("sign", "PKCS#8 PEM private key"), ("verify", "PEM public key")):
        s = sub.add_parser(name)
        s.add_argument("--key", required=True, help=key_help)
        s.add_argument("--registry", required=True, help="HOST:PORT (plain HTTP)")
        s.add_argument("--repo", required=True, help="repository, e.g. demo")
        s.add_argument("--digest", required=True, help="manifest digest sha256:...")
        s.add_argument("--creds", help="USER:PASS for the registry")
    a = p.parse_args()
    if a.cmd == "keygen":
        keygen(a.dir)
    elif a.cmd == "sign":
        sign(a)
    else:
        verify(a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
