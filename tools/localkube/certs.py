"""Certificates and keys for a throwaway control plane, made with the ``openssl`` CLI.

A real API server only speaks TLS and authenticates clients by certificate or
token, so a local cluster needs: a CA, a serving certificate for loopback, an
admin client certificate in ``system:masters``, and the service-account
signing key pair. ``openssl`` is on every machine that has Python; the
``cryptography`` package is not a dependency of this project.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

# The ClusterIP of the "kubernetes" Service: first address of the service range.
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
KUBERNETES_SERVICE_IP = "10.0.0.1"
VALID_DAYS = "3650"


@dataclass(frozen=True)
class Pki:
    """Paths of everything the control plane and its clients need."""

    ca_cert: Path
    ca_key: Path
    serving_cert: Path
    serving_key: Path
    admin_cert: Path
    admin_key: Path
    kubelet_cert: Path
    kubelet_key: Path
    service_account_key: Path
    service_account_pub: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _new_key(path: Path, folder: Path) -> None:
    # P-256 keys take milliseconds where RSA-2048 takes a quarter second each;
    # Go's TLS, Python's ssl and the service-account signer (ES256) all accept them.
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-out", str(path), cwd=folder)  # fmt: skip


def _signed(
    folder: Path, name: str, *, subject: str, extensions: str, ca_cert: Path, ca_key: Path
) -> tuple[Path, Path]:
    key, csr, cert, ext = (
        folder / f"{name}{suffix}" for suffix in (".key", ".csr", ".crt", ".ext")
    )
    ext.write_text(extensions)
    _new_key(key, folder)
    _openssl("req", "-new", "-key", str(key), "-subj", subject, "-out", str(csr), cwd=folder)
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key),
        "-CAcreateserial", "-days", VALID_DAYS, "-sha256", "-extfile", str(ext), "-out", str(cert),
        cwd=folder,
    )  # fmt: skip
    csr.unlink()
    ext.unlink()
    return cert, key


def make_pki(folder: Path) -> Pki:
    """Create a fresh PKI in ``folder`` (P-256 keys: a fraction of a second)."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    ca_key, ca_cert = folder / "ca.key", folder / "ca.crt"
    _new_key(ca_key, folder)
    _openssl(
        "req", "-x509", "-new", "-key", str(ca_key), "-subj", "/CN=localkube-ca",
        "-days", VALID_DAYS, "-sha256", "-out", str(ca_cert),
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        cwd=folder,
    )  # fmt: skip
    serving_cert, serving_key = _signed(
        folder,
        "apiserver",
        subject="/CN=kube-apiserver",
        extensions=(
            "basicConstraints=CA:FALSE\n"
            "keyUsage=critical,digitalSignature\n"
            "extendedKeyUsage=serverAuth\n"
            "subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost,"
            f"IP:{KUBERNETES_SERVICE_IP},DNS:kubernetes,DNS:kubernetes.default,"
            "DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\n"
        ),
        ca_cert=ca_cert,
        ca_key=ca_key,
    )
    admin_cert, admin_key = _signed(
        folder,
        "admin",
        subject="/O=system:masters/CN=localkube-admin",
        extensions=(
            "basicConstraints=CA:FALSE\n"
            "keyUsage=critical,digitalSignature\n"
            "extendedKeyUsage=clientAuth\n"
        ),
        ca_cert=ca_cert,
        ca_key=ca_key,
    )
    # The process-kubelet serves logs to the API server (``kubectl logs``) over TLS.
    kubelet_cert, kubelet_key = _signed(
        folder,
        "kubelet",
        subject="/O=system:nodes/CN=system:node:localkube",
        extensions=(
            "basicConstraints=CA:FALSE\n"
            "keyUsage=critical,digitalSignature\n"
            "extendedKeyUsage=serverAuth\n"
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        ),
        ca_cert=ca_cert,
        ca_key=ca_key,
    )
    sa_key, sa_pub = folder / "sa.key", folder / "sa.pub"
    _new_key(sa_key, folder)
    _openssl("pkey", "-in", str(sa_key), "-pubout", "-out", str(sa_pub), cwd=folder)
    return Pki(
        ca_cert=ca_cert,
        ca_key=ca_key,
        serving_cert=serving_cert,
        serving_key=serving_key,
        admin_cert=admin_cert,
        admin_key=admin_key,
        kubelet_cert=kubelet_cert,
        kubelet_key=kubelet_key,
        service_account_key=sa_key,
        service_account_pub=sa_pub,
    )
