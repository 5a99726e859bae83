#!/usr/bin/env python3
"""Small stdlib-only helpers for lab.sh (so the lab needs no curl/apache2-utils).

  labutil.py free-port
      Print a TCP port on 127.0.0.1 that is free right now.
  labutil.py htpasswd USER PASS
      Print one "USER:$2b$..." bcrypt line for docker-registry's htpasswd auth.
  labutil.py registry-ready HOST:PORT
      Exit 0 when GET /v2/ answers like a registry (200, or 401 when auth is on).
  labutil.py verify-manifest HOST:PORT NAME TAG DIGEST [USER:PASS]
      Fetch the manifest over plain HTTP and check that the sha256 of the body
      (and the Docker-Content-Digest header) equal DIGEST.
"""

import base64
import hashlib
import shutil
import socket
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


def _no_proxy_opener():
    # Ignore any http_proxy in the environment: the lab is loopback-only.
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


def registry_ready(hostport: str) -> bool:
    try:
        with _no_proxy_opener().open(f"http://{hostport}/v2/", timeout=2) as r:
            return r.status == 200
    except urllib.error.HTTPError as e:
        return e.code == 401 and e.headers.get("Docker-Distribution-Api-Version") is not None
    except OSError:
        return False


def verify_manifest(hostport: str, name: str, tag: str, digest: str, creds: str = None) -> None:
    req = urllib.request.Request(f"http://{hostport}/v2/{name}/manifests/{tag}")
    req.add_header("Accept", ", ".join([
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    ]))
    if creds:
        req.add_header("Authorization", "Basic " + base64.b64encode(creds.encode()).decode())
    with _no_proxy_opener().open(req, timeout=10) as r:
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
