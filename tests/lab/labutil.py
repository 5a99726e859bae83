#!/usr/bin/env python3
"""Small helpers for lab.sh (so the lab needs no curl/apache2-utils); stdlib only, except
tls-cert, which uses python3-cryptography (installed with the lab).

  labutil.py free-port
      Print a TCP port on 127.0.0.1 that is free right now.
  labutil.py htpasswd USER PASS
      Print one "USER:$2b$..." bcrypt line for docker-registry's htpasswd auth.
  labutil.py registry-ready HOST:PORT
      Exit 0 when GET /v2/ answers like a registry (200, or 401 when auth is on).
  labutil.py verify-manifest HOST:PORT NAME TAG DIGEST [USER:PASS]
      Fetch the manifest and check that the sha256 of the body (and the
      Docker-Content-Digest header) equal DIGEST.
  labutil.py tls-cert DIR
      Write DIR/ca.pem, and DIR/cert.pem + DIR/key.pem for 127.0.0.1 signed by it.

With LAB_DIR set, a registry whose DIR/certs.d/HOST:PORT/ca.pem exists is spoken to over
HTTPS, trusting that CA; any other over plain HTTP.
"""

import base64
import hashlib
import os
import shutil
import socket
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
import warnings


def free_port() -> int:
    # Bind to port 0 and let the kernel choose. The port is released again
    # before the registry binds it, so lab.sh retries on "address in use".
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def htpasswd(user: str, password: str) -> str:
    # docker-registry only accepts bcrypt. The `bcrypt` module is not in the
    # stdlib, but Debian 12's python3.11 `crypt` (libxcrypt) does bcrypt via
    # METHOD_BLOWFISH ($2b$). Cost 4 (rounds=16) is the minimum Go's bcrypt
    # accepts; it keeps each authenticated request fast (cost 12 is ~0.2 s).
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import crypt  # deprecated in 3.11, removed in 3.13
        if crypt.METHOD_BLOWFISH in crypt.methods:
            hashed = crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))
            if hashed and hashed.startswith("$2"):
                return f"{user}:{hashed}"
    except ImportError:
        pass
    # Fallback: apache2-utils' htpasswd (-B bcrypt, -C 4 cost, -n to stdout).
    if shutil.which("htpasswd"):
        out = subprocess.run(["htpasswd", "-nbBC", "4", user, password],
                             check=True, capture_output=True, text=True).stdout
        line = out.strip().splitlines()[0]
        if line.startswith(f"{user}:$2"):
            return line
    raise SystemExit("labutil.py: no bcrypt: python3 lacks crypt and htpasswd is not installed")


def _tls_ca(hostport: str):
    """The CA a lab TLS registry's certificate chains to, or None for a plain-HTTP one."""
    lab_dir = os.environ.get("LAB_DIR")
    if not lab_dir:
        return None
    ca = os.path.join(lab_dir, "certs.d", hostport, "ca.pem")
    return ca if os.path.exists(ca) else None


def _base(hostport: str) -> str:
    return f"{'https' if _tls_ca(hostport) else 'http'}://{hostport}"


def _no_proxy_opener(hostport: str = None):
    # Ignore any http_proxy in the environment: the lab is loopback-only.
    handlers = [urllib.request.ProxyHandler({})]
    ca = _tls_ca(hostport) if hostport else None
    if ca:
        context = ssl.create_default_context(cafile=ca)
        client = os.path.join(os.path.dirname(ca), "client.pem")
        if os.path.exists(client):
            context.load_cert_chain(client, os.path.join(os.path.dirname(ca), "client-key.pem"))
        handlers.append(urllib.request.HTTPSHandler(context=context))
    return urllib.request.build_opener(*handlers)


def tls_cert(directory: str) -> None:
    """Writes ca.pem, and cert.pem/key.pem for 127.0.0.1 signed by that CA, into directory; and
    client.pem/client-key.pem, a client certificate signed by client-ca.pem."""
    import datetime
    import ipaddress
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=2)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pullgate lab CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(start).not_valid_after(end)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    # A client certificate from a CA of its own, for registries that require one.
    client_ca_key = ec.generate_private_key(ec.SECP256R1())
    client_ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pullgate lab client CA")])
    client_ca = (x509.CertificateBuilder().subject_name(client_ca_name).issuer_name(client_ca_name)
                 .public_key(client_ca_key.public_key()).serial_number(x509.random_serial_number())
                 .not_valid_before(start).not_valid_after(end)
                 .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                 .sign(client_ca_key, hashes.SHA256()))
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = (x509.CertificateBuilder()
              .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pullgate lab client")]))
              .issuer_name(client_ca_name).public_key(client_key.public_key())
              .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
              .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
              .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
              .sign(client_ca_key, hashes.SHA256()))
    os.makedirs(directory, exist_ok=True)
    pem = serialization.Encoding.PEM
    with open(os.path.join(directory, "client-ca.pem"), "wb") as f:
        f.write(client_ca.public_bytes(pem))
    with open(os.path.join(directory, "client.pem"), "wb") as f:
        f.write(client.public_bytes(pem))
    with open(os.path.join(directory, "client-key.pem"), "wb") as f:
        f.write(client_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    with open(os.path.join(directory, "ca.pem"), "wb") as f:
        f.write(ca.public_bytes(pem))
    with open(os.path.join(directory, "cert.pem"), "wb") as f:
        f.write(cert.public_bytes(pem))
    with open(os.path.join(directory, "key.pem"), "wb") as f:
        f.write(key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


def registry_ready(hostport: str) -> bool:
    try:
        with _no_proxy_opener(hostport).open(f"{_base(hostport)}/v2/", timeout=2) as r:
            return r.status == 200
    except urllib.error.HTTPError as e:
        return e.code == 401 and e.headers.get("Docker-Distribution-Api-Version") is not None
    except OSError:
        return False


def verify_manifest(hostport: str, name: str, tag: str, digest: str, creds: str = None) -> None:
    req = urllib.request.Request(f"{_base(hostport)}/v2/{name}/manifests/{tag}")
    req.add_header("Accept", ", ".join([
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    ]))
    if creds:
        req.add_header("Authorization", "Basic " + base64.b64encode(creds.encode()).decode())
    with _no_proxy_opener(hostport).open(req, timeout=10) as r:
        body = r.read()
        header = r.headers.get("Docker-Content-Digest")
    got = "sha256:" + hashlib.sha256(body).hexdigest()
    if got != digest:
        raise SystemExit(f"labutil.py: registry serves {name}:{tag} with digest {got}, expected {digest}")
    if header is not None and header != digest:
        raise SystemExit(f"labutil.py: Docker-Content-Digest is {header}, expected {digest}")


def main(argv) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    cmd, args = argv[0], argv[1:]
    if cmd == "free-port" and not args:
        print(free_port())
    elif cmd == "htpasswd" and len(args) == 2:
        print(htpasswd(*args))
    elif cmd == "tls-cert" and len(args) == 1:
        tls_cert(args[0])
    elif cmd == "registry-ready" and len(args) == 1:
        return 0 if registry_ready(args[0]) else 1
    elif cmd == "verify-manifest" and len(args) in (4, 5):
        verify_manifest(*args)
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
