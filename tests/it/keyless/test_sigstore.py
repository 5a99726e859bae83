#!/usr/bin/env python3
"""A test-only sigstore instance, made fresh on every run: a Fulcio-like CA, a CT log and a
Rekor-like log key, then one keyless signature over an artifact as a sigstore bundle (v0.1:
certificate, SCT embedded in it, Rekor SET) and the trusted_root.json that trusts them.

`--case` spoils one part so a test can see the matching check refuse it. Nothing here is
copied from a real instance; every key is generated on the spot (python3-cryptography).

Usage: test_sigstore.py OUT_DIR [--subject-email E | --subject-uri U | --subject-dns H] [--issuer I] [--case C]
Writes OUT_DIR/{artifact.txt,bundle.json,trusted_root.json}.
"""

import argparse
import base64
import datetime
import hashlib
import json
import os
import struct

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CASES = ["good", "expired", "no-sct", "forged-set", "no-set", "foreign-ca", "other-artifact", "forged-sct"]
OIDC_ISSUER_V2 = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.8")
OIDC_ISSUER_V1 = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.1")
SCT_LIST = x509.ObjectIdentifier("1.3.6.1.4.1.11129.2.4.2")


def b64(data):
    return base64.b64encode(data).decode()


def spki(key):
    return key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def der_length(n):
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def ca_certificate(key, name, now):
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "pullgate test"),
                         x509.NameAttribute(NameOID.COMMON_NAME, name)])
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .sign(key, hashes.SHA256()))


def leaf_builder(ca, leaf_key, args, not_before, not_after):
    if getattr(args, "subject_dns", None):
        san = x509.DNSName(args.subject_dns)
    elif args.subject_uri:
        san = x509.UniformResourceIdentifier(args.subject_uri)
    else:
        san = x509.RFC822Name(args.subject_email)
    issuer = args.issuer.encode()
    return (x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(ca.subject)
            .public_key(leaf_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(not_before).not_valid_after(not_after)
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
            .add_extension(x509.SubjectAlternativeName([san]), critical=True)
            .add_extension(x509.UnrecognizedExtension(OIDC_ISSUER_V1, issuer), critical=False)
            .add_extension(x509.UnrecognizedExtension(OIDC_ISSUER_V2, b"\x0c" + der_length(len(issuer)) + issuer),
                           critical=False))


def embedded_sct(ct_key, ca_key, precert_tbs, when_ms):
    """RFC 6962 v1 SCT over the precertificate entry: the leaf's TBS without the SCT list."""
    log_id = hashlib.sha256(spki(ct_key)).digest()
    issuer_key_hash = hashlib.sha256(spki(ca_key)).digest()
    signed = (struct.pack(">BBQH", 0, 0, when_ms, 1) + issuer_key_hash
              + len(precert_tbs).to_bytes(3, "big") + precert_tbs + struct.pack(">H", 0))
    signature = ct_key.sign(signed, ec.ECDSA(hashes.SHA256()))
    sct = (struct.pack(">B", 0) + log_id + struct.pack(">QH", when_ms, 0)
           + struct.pack(">BBH", 4, 3, len(signature)) + signature)
    listed = struct.pack(">H", len(sct)) + sct
    sct_list = struct.pack(">H", len(listed)) + listed
    return b"\x04" + der_length(len(sct_list)) + sct_list


def leaf_certificate(ca, ca_key, ct_key, leaf_key, args, now):
    if args.case == "expired":
        not_before, not_after = now - datetime.timedelta(hours=1), now - datetime.timedelta(minutes=50)
    else:
        not_before, not_after = now - datetime.timedelta(minutes=2), now + datetime.timedelta(minutes=8)
    if args.case == "no-sct":
        return leaf_builder(ca, leaf_key, args, not_before, not_after).sign(ca_key, hashes.SHA256())
    # Same serial and fields in both builds, so removing the SCT list gives back this TBS.
    builder = leaf_builder(ca, leaf_key, args, not_before, not_after)
    precert_tbs = builder.sign(ca_key, hashes.SHA256()).tbs_certificate_bytes
    sct_key = ec.generate_private_key(ec.SECP256R1()) if args.case == "forged-sct" else ct_key
    sct_value = embedded_sct(sct_key, ca_key, precert_tbs, int(now.timestamp() * 1000) - 90_000)
    return builder.add_extension(x509.UnrecognizedExtension(SCT_LIST, sct_value), critical=False).sign(
        ca_key, hashes.SHA256())


def log_entry(rekor_key, leaf, leaf_key, artifact, args, now):
    signature = leaf_key.sign(artifact, ec.ECDSA(hashes.SHA256()))
    logged = b"another artifact" if args.case == "other-artifact" else artifact
    body = json.dumps({
        "apiVersion": "0.0.1", "kind": "hashedrekord",
        "spec": {"data": {"hash": {"algorithm": "sha256", "value": hashlib.sha256(logged).hexdigest()}},
                 "signature": {"content": b64(signature),
                               "publicKey": {"content": b64(leaf.public_bytes(serialization.Encoding.PEM))}}},
    }, separators=(",", ":")).encode()
    integrated = int(now.timestamp()) - 60
    log_id = hashlib.sha256(spki(rekor_key)).digest()
    promise = json.dumps({"body": b64(body), "integratedTime": integrated, "logID": log_id.hex(), "logIndex": 7},
                         sort_keys=True, separators=(",", ":")).encode()
    set_key = ec.generate_private_key(ec.SECP256R1()) if args.case == "forged-set" else rekor_key
    entry = {
        "logIndex": "7", "logId": {"keyId": b64(log_id)},
        "kindVersion": {"kind": "hashedrekord", "version": "0.0.1"},
        "integratedTime": str(integrated),
        "inclusionPromise": {"signedEntryTimestamp": b64(set_key.sign(promise, ec.ECDSA(hashes.SHA256())))},
        "canonicalizedBody": b64(body),
    }
    if args.case == "no-set":
        del entry["inclusionPromise"]
    return signature, entry


def log_key(key, start):
    return {"rawBytes": b64(spki(key)), "keyDetails": "PKIX_ECDSA_P256_SHA_256", "validFor": {"start": start}}


def trusted_root(ca, rekor_key, ct_key, now):
    start = (now - datetime.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
        "tlogs": [{"baseUrl": "https://rekor.test", "hashAlgorithm": "SHA2_256", "publicKey": log_key(rekor_key, start),
                   "logId": {"keyId": b64(hashlib.sha256(spki(rekor_key)).digest())}}],
        "certificateAuthorities": [{
            "subject": {"organization": "pullgate test", "commonName": "test fulcio"}, "uri": "https://fulcio.test",
            "certChain": {"certificates": [{"rawBytes": b64(ca.public_bytes(serialization.Encoding.DER))}]},
            "validFor": {"start": start}}],
        "ctlogs": [{"baseUrl": "https://ctfe.test", "hashAlgorithm": "SHA2_256", "publicKey": log_key(ct_key, start),
                    "logId": {"keyId": b64(hashlib.sha256(spki(ct_key)).digest())}}],
        "timestampAuthorities": [],
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--subject-email", default="signer@example.test")
    parser.add_argument("--subject-uri")
    parser.add_argument("--subject-dns", help="a DNS name as the only SAN (a private CA's host certificate)")
    parser.add_argument("--issuer", default="https://issuer.example.test")
    parser.add_argument("--case", choices=CASES, default="good")
    args = parser.parse_args()
    now = datetime.datetime.now(datetime.timezone.utc)
    keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(5)]
    ca_key, ct_key, rekor_key, leaf_key, foreign_key = keys
    ca = ca_certificate(ca_key, "test fulcio", now)
    signing_ca, signing_key = (ca_certificate(foreign_key, "foreign", now), foreign_key) \
        if args.case == "foreign-ca" else (ca, ca_key)
    leaf = leaf_certificate(signing_ca, signing_key, ct_key, leaf_key, args, now)
    artifact = b"a keyless-signed artifact\n"
    signature, entry = log_entry(rekor_key, leaf, leaf_key, artifact, args, now)
    bundle = {
        "mediaType": "application/vnd.dev.sigstore.bundle+json;version=0.1",
        "verificationMaterial": {
            "x509CertificateChain": {"certificates": [{"rawBytes": b64(leaf.public_bytes(serialization.Encoding.DER))}]},
            "tlogEntries": [entry],
        },
        "messageSignature": {"messageDigest": {"algorithm": "SHA2_256", "digest": b64(hashlib.sha256(artifact).digest())},
                             "signature": b64(signature)},
    }
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "artifact.txt"), "wb") as f:
        f.write(artifact)
    with open(os.path.join(args.out, "bundle.json"), "w") as f:
        json.dump(bundle, f, indent=1)
    with open(os.path.join(args.out, "trusted_root.json"), "w") as f:
        json.dump(trusted_root(ca, rekor_key, ct_key, now), f, indent=1)


if __name__ == "__main__":
    main()
