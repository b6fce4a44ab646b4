"""TlsMaterial: a self-signed CA and server certificate from pulumi-tls (dev and proxies)."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_tls as tls


@dataclass
class TlsMaterialArgs:
    common_name: str
    dns_names: list[pulumi.Input[str]]
    ip_addresses: list[pulumi.Input[str]]
    validity_hours: int = 24 * 365


class TlsMaterial(pulumi.ComponentResource):
    """ECDSA P-256 CA + server certificate; keys are Pulumi secrets."""

    ca_cert_pem: pulumi.Output[str]
    cert_pem: pulumi.Output[str]
    private_key_pem: pulumi.Output[str]

    def __init__(self, name: str, args: TlsMaterialArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mqtt-cluster:index:TlsMaterial", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        ca_key = tls.PrivateKey(f"{name}-ca-key", algorithm="ECDSA", ecdsa_curve="P256", opts=child)
        ca = tls.SelfSignedCert(
            f"{name}-ca",
            private_key_pem=ca_key.private_key_pem,
            is_ca_certificate=True,
            validity_period_hours=args.validity_hours * 5,
            allowed_uses=["cert_signing", "crl_signing"],
            subject=tls.SelfSignedCertSubjectArgs(common_name=f"{args.common_name} CA", organization="mqtt-cluster"),
            opts=child,
        )
        key = tls.PrivateKey(f"{name}-server-key", algorithm="ECDSA", ecdsa_curve="P256", opts=child)
        csr = tls.CertRequest(
            f"{name}-server-csr",
            private_key_pem=key.private_key_pem,
            subject=tls.CertRequestSubjectArgs(common_name=args.common_name, organization="mqtt-cluster"),
            dns_names=args.dns_names,
            ip_addresses=args.ip_addresses,
            opts=child,
        )
        cert = tls.LocallySignedCert(
            f"{name}-server",
            cert_request_pem=csr.cert_request_pem,
            ca_private_key_pem=ca_key.private_key_pem,
            ca_cert_pem=ca.cert_pem,
            validity_period_hours=args.validity_hours,
            early_renewal_hours=24 * 30,
            allowed_uses=["digital_signature", "key_encipherment", "server_auth"],
            opts=child,
        )
        self.ca_cert_pem = ca.cert_pem
        self.cert_pem = cert.cert_pem
        self.private_key_pem = pulumi.Output.secret(key.private_key_pem)
        self.register_outputs({"ca_cert_pem": self.ca_cert_pem, "cert_pem": self.cert_pem})
