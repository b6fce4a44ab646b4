"""BrokerTls: the server certificate the brokers present themselves when an NLB passes TLS through.

Device certificates cannot be verified by an NLB TLS listener, so with auth.mechanism password+mtls
the NLB listens TCP and the brokers' SSL listener terminates TLS. The certificate comes from the
stack's own CA (pulumi-tls; ACM never releases a private key) and reaches the brokers as SSM
SecureString parameters fetched at boot, never user-data. Clients trust the exported CA.
"""

from __future__ import annotations

import pulumi

from components.config import StackConfig
from components.renderers import broker as br
from components.secrets import secure_parameters
from components.tls_certs import TlsMaterial, TlsMaterialArgs


class BrokerTls(pulumi.ComponentResource):
    ca_cert_pem: pulumi.Output[str]

    def __init__(self, name: str, cfg: StackConfig, param_prefix: str, tags: dict[str, str], opts: pulumi.ResourceOptions | None = None):
        super().__init__("mqtt-cluster:index:BrokerTls", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        lb = cfg.load_balancer
        # The name clients use: the stack's domain, or the NLB's own DNS name
        # (<name>-<16 hex>.elb.<region>.amazonaws.com; a "*" stands for exactly one label).
        material = TlsMaterial(
            f"{name}-tls",
            TlsMaterialArgs(
                common_name=lb.domain or f"mqtt.{cfg.stack}",
                dns_names=[*([lb.domain] if lb.domain else []), f"*.elb.{cfg.region}.amazonaws.com", *lb.alternative_names],
                ip_addresses=[],
            ),
            opts=child,
        )
        values = {"broker-tls-cert": material.cert_pem, "broker-tls-key": material.private_key_pem}
        assert set(values) == set(br.TLS_FILES)  # noqa: S101 - the start script fetches exactly these
        self.parameter_names = secure_parameters(name, param_prefix, values, tags, child)
        self.ca_cert_pem = material.ca_cert_pem
        self.register_outputs({"ca_cert_pem": self.ca_cert_pem})
