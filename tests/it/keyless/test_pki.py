#!/usr/bin/env python3
"""A test-only company PKI for containers-policy.json `pki`, made fresh on every run: a root CA,
an intermediate CA, a code-signing leaf for dev@example.com and *.build.example.com, and leaves
spoiled one way each. Every key is generated on the spot (python3-cryptography).

Usage: test_pki.py OUT_DIR
Writes OUT_DIR/:
  root.pem          the root CA (the policy's caRoots)
  intermediate.pem  the intermediate CA (the policy's caIntermediates, or the chain annotation)
  chain.pem         intermediate then root, as `cosign --certificate-chain` takes it
  leaf.pem          valid now, EKU code signing, SANs dev@example.com and *.build.example.com
  leaf.key          its P-256 key, PKCS#8 PEM (unencrypted)
  other.key         another P-256 key, PKCS#8 PEM
  expired.pem       as leaf.pem (same key), expired yesterday
  server-eku.pem    as leaf.pem (same key), EKU server authentication only
  outside-root.pem  another root CA, in no policy
  outside.pem       as leaf.pem (same key), issued by outside-root.pem
  no-eku.pem        as leaf.pem (same key), without an EKU extension
"""

import datetime
import os
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def name(common_name):
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "pullgate test pki"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def ca(key, subject, issuer, issuer_key, now):
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=2)).not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .sign(issuer_key, hashes.SHA256()))


def leaf(key, issuer, issuer_key, now, eku=(ExtendedKeyUsageOID.CODE_SIGNING,), expired=False):
    not_after = now - datetime.timedelta(days=1) if expired else now + datetime.timedelta(days=30)
    builder = (x509.CertificateBuilder().subject_name(name("signer")).issuer_name(issuer.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(not_after)
               .add_extension(x509.SubjectAlternativeName([
                   x509.RFC822Name("dev@example.com"), x509.DNSName("*.build.example.com")]), critical=False)
               .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False),
                              critical=True))
    if eku:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def main():
    out = sys.argv[1]
    now = datetime.datetime.now(datetime.timezone.utc)
    root_key, intermediate_key, outside_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    leaf_key, other_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    root = ca(root_key, name("root"), name("root"), root_key, now)
    intermediate = ca(intermediate_key, name("intermediate"), root.subject, root_key, now)
    outside_root = ca(outside_key, name("root"), name("root"), outside_key, now)
    pem = lambda cert: cert.public_bytes(serialization.Encoding.PEM)
    key_pem = lambda key: key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption())
    files = {
        "root.pem": pem(root),
        "intermediate.pem": pem(intermediate),
        "chain.pem": pem(intermediate) + pem(root),
        "leaf.pem": pem(leaf(leaf_key, intermediate, intermediate_key, now)),
        "leaf.key": key_pem(leaf_key),
        "other.key": key_pem(other_key),
        "expired.pem": pem(leaf(leaf_key, intermediate, intermediate_key, now, expired=True)),
        "server-eku.pem": pem(leaf(leaf_key, intermediate, intermediate_key, now,
                                   eku=(ExtendedKeyUsageOID.SERVER_AUTH,))),
        "outside-root.pem": pem(outside_root),
        "outside.pem": pem(leaf(leaf_key, outside_root, outside_key, now)),
        "no-eku.pem": pem(leaf(leaf_key, intermediate, intermediate_key, now, eku=())),
    }
    for file, data in files.items():
        with open(os.path.join(out, file), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
