"""BrokerImage: docker/<engine>/Dockerfile built on the stock image, when a stack asks for it.

On the local stack the image stays in the local daemon; on AWS it is pushed to a private ECR
repository (scanned on push, immutable tags) and the hosts pull it by digest with their role.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_aws as aws
import pulumi_docker as docker

from components.config import StackConfig, instance_arch

DOCKER_DIR = Path(__file__).resolve().parent.parent / "docker"


def context_dir(engine: str) -> Path:
    return DOCKER_DIR / engine


def context_hash(engine: str) -> str:
    """Content hash of the build context: the image tag changes exactly when the recipe does."""
    digest = hashlib.sha256()
    root = context_dir(engine)
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def image_tag(cfg: StackConfig) -> str:
    return f"{cfg.brokers.effective_version}-{context_hash(cfg.brokers.engine)}"


def docker_platform(instance_type: str) -> str:
    return "linux/arm64" if instance_arch(instance_type) == "arm64" else "linux/amd64"


# Keep the last images of a repository; older ones are expired by ECR.
ECR_LIFECYCLE = json.dumps(
    {
        "rules": [
            {
                "rulePriority": 1,
                "description": "keep the 10 most recent images",
                "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 10},
                "action": {"type": "expire"},
            }
        ]
    }
)


@dataclass
class BrokerImageArgs:
    cfg: StackConfig
    push_to_ecr: bool
    """True on AWS: push to a new ECR repository; False locally: keep in the local daemon."""
    tags: dict[str, str]


class BrokerImage(pulumi.ComponentResource):
    """The custom broker image. ``ref`` is what containers run: a digest on ECR, a tag locally."""

    ref: pulumi.Output[str]
    repository_arn: pulumi.Output[str] | None
    registry: pulumi.Output[str] | None

    def __init__(self, name: str, args: BrokerImageArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mqtt-cluster:index:BrokerImage", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        cfg = args.cfg
        engine = cfg.brokers.engine
        build = docker.DockerBuildArgs(
            context=str(context_dir(engine)),
            dockerfile=str(context_dir(engine) / "Dockerfile"),
            args={"BASE": cfg.brokers.stock_image},
            platform=docker_platform(cfg.brokers.instance_type) if args.push_to_ecr else None,
        )
        tag = image_tag(cfg)
        self.repository_arn = None
        self.registry = None
        if args.push_to_ecr:
            repo = aws.ecr.Repository(
                f"{name}-repo",
                name=f"mqtt-cluster/{cfg.stack}/{engine}",
                image_tag_mutability="IMMUTABLE",
                image_scanning_configuration=aws.ecr.RepositoryImageScanningConfigurationArgs(scan_on_push=True),
                encryption_configurations=[aws.ecr.RepositoryEncryptionConfigurationArgs(encryption_type="AES256")],
                force_delete=True,
                tags=args.tags,
                opts=child,
            )
            aws.ecr.LifecyclePolicy(f"{name}-lifecycle", repository=repo.name, policy=ECR_LIFECYCLE, opts=child)
            creds = aws.ecr.get_authorization_token_output(registry_id=repo.registry_id)
            image = docker.Image(
                f"{name}-image",
                image_name=repo.repository_url.apply(lambda url: f"{url}:{tag}"),
                build=build,
                registry=docker.RegistryArgs(
                    server=repo.repository_url, username=creds.user_name, password=pulumi.Output.secret(creds.password)
                ),
                opts=child,
            )
            # By digest: a host never runs a different image than the one this deployment built.
            self.ref = image.repo_digest
            self.repository_arn = repo.arn
            self.registry = repo.repository_url.apply(lambda url: url.split("/", 1)[0])
        else:
            image = docker.Image(
                f"{name}-image",
                image_name=f"mqtt-cluster/{engine}:{tag}",
                build=build,
                skip_push=True,
                opts=child,
            )
            self.ref = image.image_name
        self.register_outputs({"ref": self.ref})
