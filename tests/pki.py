"""Test certificates made with openssl: a CA, a server certificate, a client certificate the CA
signed and one from another (self-signed) authority."""

from __future__ import annotations

import subprocess
from pathlib import Path


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_pki(folder: Path) -> dict[str, Path]:
    """PEM files in `folder`: ca, server, client (signed by ca), rogue (self-signed), each with
    its `_key`."""
    files = {name: folder / f"{name}.pem" for name in
             ("ca", "ca_key", "server", "server_key", "client", "client_key", "csr",
              "rogue", "rogue_key")}  # fmt: skip
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=test-ca",
            "-keyout", str(files["ca_key"]), "-out", str(files["ca"]))  # fmt: skip
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
            "-keyout", str(files["server_key"]), "-out", str(files["server"]))  # fmt: skip
    openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=ris",
            "-keyout", str(files["client_key"]), "-out", str(files["csr"]))  # fmt: skip
    openssl("x509", "-req", "-in", str(files["csr"]), "-CA", str(files["ca"]), "-CAkey",
            str(files["ca_key"]), "-CAcreateserial", "-days", "1", "-out", str(files["client"]))  # fmt: skip
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=ris",
            "-keyout", str(files["rogue_key"]), "-out", str(files["rogue"]))  # fmt: skip
    return files
