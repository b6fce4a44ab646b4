"""Which input changes replace a resource rather than update it, for every custom resource type the
program registers (tests/test_update_view_table.py holds the table to the shipped stacks and to the
installed SDKs). Input names are the offline plan's (camelCase); "a.b" is a field nested in input a.

Each entry cites the provider source it was read from; what holds for a whole provider is here:

  TF-AWS   hashicorp/terraform-provider-aws@8aebcb61aa internal/service/ (2023-08-24: ForceNew, or a
           CustomizeDiff ForceNew, at the line given). pulumi-aws 7.51.1 bridges upstream v6, whose
           source is not available here; 8aebcb61aa is the newest upstream commit available (the base
           of pulumi/terraform-provider-aws branch patched-v5.14.0). At 5c58e0c (2022-05-18) the same
           attributes are ForceNew where they exist, but for the certificate's options (then ForceNew).
  REGION   hashicorp/terraform-provider-aws@0cb788c website/docs/guides/enhanced-region-support.html.markdown:56
           (v6: every regional resource has `region`; changing it forces replacement; IAM and Route 53
           are global and have none).
  P-AWS    pulumi/pulumi-aws@015d343 provider/resource_overrides.go, by map key (pulumi-aws v7; read
           through an index without line numbers), and @0c5f658 provider/autonaming.go:13-32 (every
           resource with an input `name` and no field override gets it auto-named).
  KW       kreuzwerker/terraform-provider-docker@v4.5.0 internal/provider/ (the upstream pinned by
           pulumi/pulumi-docker v5.1.0 and @237b789; unchanged for these files up to 83c00e0, 2026-07-22).
  P-DOCKER pulumi/pulumi-docker@237b789 provider/ (the newest snapshot available, after v5.1.0).
  TLS      hashicorp/terraform-provider-tls@d72d90e internal/provider/ (Plugin Framework: RequiresReplace).
  RANDOM   hashicorp/terraform-provider-random@v3.9.0 internal/provider/resource_password.go (the commit
           pulumi/pulumi-random@f64d872 provider/go.mod pins; Plugin Framework).
  CMD      pulumi/pulumi-command@v1.2.1 provider/pkg/provider/.
  BRIDGE   pulumi/pulumi-terraform-bridge@v3.136.0.

Replacement deletes first (the engine deletes the old resource, and what would be replaced with it,
before it creates the new one) when the provider asks for it. A bridged provider asks when its
ResourceInfo sets DeleteBeforeReplace, or, for a Terraform SDKv2 resource, when an input the bridge
auto-names was set by the program rather than by the auto-namer: BRIDGE pkg/tfbridge/provider.go:1275-1276,
pkg/tfbridge/schema.go:193-246 (:238-243). Plugin Framework resources ask only through DeleteBeforeReplace
(pkg/pf/tfbridge/provider_diff.go:114-121). The resource option deleteBeforeReplace overrides both.
"""

from __future__ import annotations

from typing import NamedTuple


class Facts(NamedTuple):
    replace_on: frozenset[str]
    """Inputs whose change makes the provider replace the resource."""
    autoname: str | None = None
    """The input the bridge auto-names; set by the program, a replacement deletes first (SDKv2 only)."""
    deletes_first: bool = False
    """The provider always deletes before it creates the replacement."""


def _facts(*inputs: str, autoname: str | None = None, deletes_first: bool = False) -> Facts:
    return Facts(frozenset(inputs), autoname, deletes_first)


def _regional(*inputs: str, **kw) -> Facts:
    return _facts(*inputs, "region", **kw)  # REGION


FACTS: dict[str, Facts] = {
    # --- AWS: TF-AWS, file: pulumi input :ForceNew line --------------------------------------------
    # acm/certificate.go: certificateAuthorityArn :76, domainName :95, keyAlgorithm :135,
    # subjectAlternativeNames :206, validationMethod :231, validationOptions :238 (an imported
    # certificate's body, chain and key update in place)
    "aws:acm/certificate:Certificate": _regional(
        "certificateAuthorityArn", "domainName", "keyAlgorithm", "subjectAlternativeNames", "validationMethod", "validationOptions"
    ),
    # acm/certificate_validation.go: certificateArn :41, validationRecordFqdns :46
    "aws:acm/certificateValidation:CertificateValidation": _regional("certificateArn", "validationRecordFqdns"),
    # cloudwatch/dashboard.go: dashboardName :58 (the body updates in place)
    "aws:cloudwatch/dashboard:Dashboard": _regional("dashboardName"),
    # logs/group.go: name :50, namePrefix :58; name auto-named (P-AWS autonaming.go; the
    # "aws_cloudwatch_log_group" override sets IDFields only)
    "aws:cloudwatch/logGroup:LogGroup": _regional("name", "namePrefix", autoname="name"),
    # cloudwatch/metric_alarm.go: alarm_name :71, which P-AWS "aws_cloudwatch_metric_alarm" renames
    # to the auto-named `name`
    "aws:cloudwatch/metricAlarm:MetricAlarm": _regional("name", autoname="name"),
    # ecr/lifecycle_policy.go: repository :43, policy :48; P-AWS "aws_ecr_lifecycle_policy" sets
    # DeleteBeforeReplace
    "aws:ecr/lifecyclePolicy:LifecyclePolicy": _regional("repository", "policy", deletes_first=True),
    # ecr/repository.go: encryptionConfigurations :72, name :101 (tag mutability, scanning in place);
    # name auto-named (P-AWS autonaming.go)
    "aws:ecr/repository:Repository": _regional("encryptionConfigurations", "name", autoname="name"),
    # ec2/ebs_volume.go: availabilityZone :61, encrypted :67, kmsKeyId :83, multiAttachEnabled :89,
    # outpostArn :94, snapshotId :107 (size, type, iops, throughput update in place)
    "aws:ebs/volume:Volume": _regional("availabilityZone", "encrypted", "kmsKeyId", "multiAttachEnabled", "outpostArn", "snapshotId"),
    # ec2/ec2_eip.go: address :52, domain :80, networkBorderGroup :95, publicIpv4Pool :121
    "aws:ec2/eip:Eip": _regional("address", "domain", "networkBorderGroup", "publicIpv4Pool"),
    # ec2/ec2_eip_association.go: allocationId :37, allowReassociation :42, instanceId :48,
    # networkInterfaceId :54, privateIpAddress :60, publicIp :66
    "aws:ec2/eipAssociation:EipAssociation": _regional(
        "allocationId", "allowReassociation", "instanceId", "networkInterfaceId", "privateIpAddress", "publicIp"
    ),
    # ec2/ec2_instance.go: ami :66, associatePublicIpAddress :77, availabilityZone :85,
    # cpuOptions.amdSevSnp :135 .coreCount :150 .threadsPerCore :157, ebsBlockDevices (every field,
    # :234-:288), ebsOptimized :305, enclaveOptions.enabled :318, ephemeralBlockDevices :327,
    # hibernation :363, hostId :369, instanceMarketOptions :395, ipv6AddressCount :466,
    # ipv6Addresses :474, keyName :484, launchTemplate :491, networkInterfaces.deleteOnTermination :592
    # .deviceIndex :597 .networkCardIndex :602 .networkInterfaceId :608, placementGroup :625,
    # placementPartitionNumber :632, privateDnsNameOptions :646, privateIp :672,
    # rootBlockDevice.encrypted :706 .kmsKeyId :718, securityGroups :758, subnetId :780, tenancy :788;
    # userData, userDataBase64 only with userDataReplaceOnChange (:902, :905: update_view applies it).
    # instanceType, iamInstanceProfile, vpcSecurityGroupIds, metadataOptions, the root volume's
    # size and type update in place.
    "aws:ec2/instance:Instance": _regional(
        "ami",
        "associatePublicIpAddress",
        "availabilityZone",
        "cpuOptions.amdSevSnp",
        "cpuOptions.coreCount",
        "cpuOptions.threadsPerCore",
        "ebsBlockDevices",
        "ebsOptimized",
        "enclaveOptions.enabled",
        "ephemeralBlockDevices",
        "hibernation",
        "hostId",
        "instanceMarketOptions",
        "ipv6AddressCount",
        "ipv6Addresses",
        "keyName",
        "launchTemplate",
        "networkInterfaces.deleteOnTermination",
        "networkInterfaces.deviceIndex",
        "networkInterfaces.networkCardIndex",
        "networkInterfaces.networkInterfaceId",
        "placementGroup",
        "placementPartitionNumber",
        "privateDnsNameOptions",
        "privateIp",
        "rootBlockDevice.encrypted",
        "rootBlockDevice.kmsKeyId",
        "securityGroups",
        "subnetId",
        "tenancy",
        "userData",
        "userDataBase64",
    ),
    # ec2/vpc_internet_gateway.go: nothing; vpcId :56 attaches and detaches in place
    "aws:ec2/internetGateway:InternetGateway": _regional(),
    # ec2/ec2_key_pair.go: keyName :61, keyNamePrefix :69, publicKey :84; P-AWS "aws_key_pair"
    # auto-names keyName
    "aws:ec2/keyPair:KeyPair": _regional("keyName", "keyNamePrefix", "publicKey", autoname="keyName"),
    # ec2/vpc_nat_gateway.go: allocationId :52, connectivityType :61, privateIp :73,
    # secondaryPrivateIpAddressCount :89, subnetId :102
    "aws:ec2/natGateway:NatGateway": _regional(
        "allocationId", "connectivityType", "privateIp", "secondaryPrivateIpAddressCount", "subnetId"
    ),
    # ec2/vpc_peering_connection_options.go: vpcPeeringConnectionId :34 (accepter, requester in place)
    "aws:ec2/peeringConnectionOptions:PeeringConnectionOptions": _regional("vpcPeeringConnectionId"),
    # ec2/vpc_route.go: routeTableId :71, destinationCidrBlock :80, destinationIpv6CidrBlock :87,
    # destinationPrefixListId :95 (the target, e.g. gatewayId or natGatewayId, changes in place)
    "aws:ec2/route:Route": _regional("routeTableId", "destinationCidrBlock", "destinationIpv6CidrBlock", "destinationPrefixListId"),
    # ec2/vpc_route_table.go: vpcId :158
    "aws:ec2/routeTable:RouteTable": _regional("vpcId"),
    # ec2/vpc_route_table_association.go: gatewayId :44, subnetId :54 (routeTableId in place)
    "aws:ec2/routeTableAssociation:RouteTableAssociation": _regional("gatewayId", "subnetId"),
    # ec2/vpc_security_group.go: description :65, name :75, namePrefix :86, vpcId :107; name
    # auto-named (P-AWS autonaming.go; "aws_security_group" overrides description, ingress, egress)
    "aws:ec2/securityGroup:SecurityGroup": _regional("description", "name", "namePrefix", "vpcId", autoname="name"),
    # ec2/vpc_subnet.go: availabilityZone :65, availabilityZoneId :72, cidrBlock :78, ipv6Native :118,
    # outpostArn :134, vpcId :152 (mapPublicIpOnLaunch in place)
    "aws:ec2/subnet:Subnet": _regional("availabilityZone", "availabilityZoneId", "cidrBlock", "ipv6Native", "outpostArn", "vpcId"),
    # ec2/ebs_volume_attachment.go: deviceName :61, instanceId :70, volumeId :83
    "aws:ec2/volumeAttachment:VolumeAttachment": _regional("deviceName", "instanceId", "volumeId"),
    # ec2/vpc_.go: cidrBlock :78 (and CustomizeDiff :527), instanceTenancy :517 (but dedicated to
    # default), ipv4IpamPoolId :122, ipv4NetmaskLength :127 (enableDnsHostnames/Support in place)
    "aws:ec2/vpc:Vpc": _regional("cidrBlock", "instanceTenancy", "ipv4IpamPoolId", "ipv4NetmaskLength"),
    # ec2/vpc_peering_connection.go: peerOwnerId :60, peerRegion :66, peerVpcId :72, vpcId :80
    "aws:ec2/vpcPeeringConnection:VpcPeeringConnection": _regional("peerOwnerId", "peerRegion", "peerVpcId", "vpcId"),
    # ec2/vpc_peering_connection_accepter.go: vpcPeeringConnectionId :82
    "aws:ec2/vpcPeeringConnectionAccepter:VpcPeeringConnectionAccepter": _regional("vpcPeeringConnectionId"),
    # elb/listener_policy.go: nothing (loadBalancerName :32, loadBalancerPort :36, policyNames :40 are
    # set again in place)
    "aws:elb/listenerPolicy:ListenerPolicy": _regional(),
    # elb/load_balancer.go: internal :188, name :229, namePrefix :236; subnets only when every current
    # subnet goes (:53-:60), so not listed; name auto-named (P-AWS autonaming.go)
    "aws:elb/loadBalancer:LoadBalancer": _regional("internal", "name", "namePrefix", autoname="name"),
    # elb/backend_server_policy.go: nothing (instancePort :32, loadBalancerName :36, policyNames :40
    # are set again in place)
    "aws:elb/loadBalancerBackendServerPolicy:LoadBalancerBackendServerPolicy": _regional(),
    # elb/policy.go: loadBalancerName :34, policyName :63, policyTypeName :68
    "aws:elb/loadBalancerPolicy:LoadBalancerPolicy": _regional("loadBalancerName", "policyName", "policyTypeName"),
    # iam/instance_profile.go: name :60, namePrefix :68, path :76 (role in place); name auto-named
    # (P-AWS autonaming.go)
    "aws:iam/instanceProfile:InstanceProfile": _facts("name", "namePrefix", "path", autoname="name"),
    # iam/role.go: name :143, namePrefix :151, path :159 (assumeRolePolicy in place); P-AWS
    # "aws_iam_role" auto-names name
    "aws:iam/role:Role": _facts("name", "namePrefix", "path", autoname="name"),
    # iam/role_policy.go: name :60, namePrefix :67, role :74 (the policy document in place); name
    # auto-named (P-AWS autonaming.go)
    "aws:iam/rolePolicy:RolePolicy": _facts("name", "namePrefix", "role", autoname="name"),
    # iam/role_policy_attachment.go: role :38, policyArn :43; P-AWS "aws_iam_role_policy_attachment"
    # sets DeleteBeforeReplace
    "aws:iam/rolePolicyAttachment:RolePolicyAttachment": _facts("role", "policyArn", deletes_first=True),
    # elbv2/listener.go: loadBalancerArn :355 (port, protocol, certificate, actions in place)
    "aws:lb/listener:Listener": _regional("loadBalancerArn"),
    # elbv2/load_balancer.go: customerOwnedIpv4Pool :105, internal :172, loadBalancerType :183,
    # name :192, namePrefix :199, subnetMappings :219; a network load balancer (every one this program
    # makes) also on any change of subnets (:1045) and when securityGroups goes from none to some or
    # back (:1055: not listed, the program always sets one); name auto-named (P-AWS autonaming.go)
    "aws:lb/loadBalancer:LoadBalancer": _regional(
        "customerOwnedIpv4Pool",
        "internal",
        "loadBalancerType",
        "name",
        "namePrefix",
        "subnetMappings",
        "subnets",
        autoname="name",
    ),
    # elbv2/target_group.go: ipAddressType :152, name :183, namePrefix :190, port :197, protocol :210,
    # protocolVersion :217, targetType :322, vpcId :328 (health check, stickiness, deregistration
    # delay, proxy protocol in place); name auto-named (P-AWS autonaming.go)
    "aws:lb/targetGroup:TargetGroup": _regional(
        "ipAddressType", "name", "namePrefix", "port", "protocol", "protocolVersion", "targetType", "vpcId", autoname="name"
    ),
    # elbv2/target_group_attachment.go: targetGroupArn :35, targetId :41, port :47, availabilityZone :53
    "aws:lb/targetGroupAttachment:TargetGroupAttachment": _regional("targetGroupArn", "targetId", "port", "availabilityZone"),
    # route53/health_check.go: measureLatency :113, referenceName :123, requestInterval :144,
    # routingControlArn :154, type :168 (fqdn, ipAddress, port, failureThreshold in place)
    "aws:route53/healthCheck:HealthCheck": _facts("measureLatency", "referenceName", "requestInterval", "routingControlArn", "type"),
    # route53/record.go: name :219, zoneId :273 (type :244, records, ttl, aliases, routing policies in
    # place); P-AWS "aws_route53_record" keeps name out of auto-naming
    "aws:route53/record:Record": _facts("name", "zoneId"),
    # route53/zone.go: delegationSetId :68, name :84 (vpcs, comment in place); name auto-named (P-AWS
    # autonaming.go; "aws_route53_zone" overrides comment only)
    "aws:route53/zone:Zone": _facts("delegationSetId", "name", autoname="name"),
    # route53/zone_association.go: zoneId :37, vpcId :43, vpcRegion :50
    "aws:route53/zoneAssociation:ZoneAssociation": _facts("zoneId", "vpcId", "vpcRegion"),
    # sns/topic.go: fifoTopic :78, name :133, namePrefix :140; P-AWS "aws_sns_topic" auto-names name
    "aws:sns/topic:Topic": _regional("fifoTopic", "name", "namePrefix", autoname="name"),
    # sns/topic_subscription.go: endpoint :55, protocol :89, topic :111 (topic_arn, which P-AWS
    # "aws_sns_topic_subscription" renames)
    "aws:sns/topicSubscription:TopicSubscription": _regional("endpoint", "protocol", "topic"),
    # ssm/parameter.go: name :86; tier only from Advanced to Standard (:129); value, type, description
    # in place; name auto-named (P-AWS autonaming.go; "aws_ssm_parameter" overrides type only)
    "aws:ssm/parameter:Parameter": _regional("name", autoname="name"),
    # ec2/vpc_security_group_ingress_rule.go (Plugin Framework; the egress rule embeds it,
    # vpc_security_group_egress_rule.go:27): securityGroupId :142; a change of the kind of source
    # (cidrIpv4, cidrIpv6, prefixListId, referencedSecurityGroupId) :338-:342; ports, protocol, the
    # source's value in place
    "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule": _regional("securityGroupId"),
    "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule": _regional("securityGroupId"),
    # --- pulumi-command: CMD --------------------------------------------------------------------
    # common/inputs.go:10 tags triggers replaceOnChanges, which the SDK sends as the resource option
    # replaceOnChanges ["triggers[*]"] (pulumi_command 1.2.1 local/command.py:807,
    # remote/command.py:455) and the engine applies whether or not an update command is given
    # (pulumi/pulumi v3.259.0 pkg/resource/deploy/step_generator.go:3122-3175). Every other input,
    # connection included (remote/command.go:46), updates: the update command runs, else create.
    "command:local:Command": _facts("triggers"),
    "command:remote:Command": _facts("triggers"),
    # --- Docker: KW, resource_docker_*.go: input :ForceNew line; `name` auto-named (P-DOCKER
    # resources.go:404; the image's :130 has a field of its own) -----------------------------------
    # container: name :54, readOnly :69, image :145, hostname :152, domainname :160, command :167,
    # entrypoints :176, user :185, dns :200, dnsOpts :209, dnsSearches :218, publishAllPorts :227,
    # workingDir :247, capabilities :266, securityOpts :295, runtime :304, platform :311,
    # stopSignal :318, stopTimeout :325, mounts :332, volumes :438, ports :491, hosts :541,
    # ulimits :565, envs :594, privileged :660, devices :667, deviceRequests :778, labels :837,
    # shmSize :867, logDriver :891, logOpts :898, networkMode :905, networksAdvanced :913,
    # pidMode :978, usernsMode :984, uploads :991, sysctls :1109, ipcMode :1115, groupAdds :1122,
    # tty :1137, stdinOpen :1144, storageOpts :1150, gpus :1156, cpus :1162, cgroupnsMode :1180,
    # cgroupParent :1186 (restart, healthcheck, wait, memory, destroyGraceSeconds in place);
    # P-DOCKER resources.go:114 sets DeleteBeforeReplace
    "docker:index/container:Container": _facts(
        "name",
        "readOnly",
        "image",
        "hostname",
        "domainname",
        "command",
        "entrypoints",
        "user",
        "dns",
        "dnsOpts",
        "dnsSearches",
        "publishAllPorts",
        "workingDir",
        "capabilities",
        "securityOpts",
        "runtime",
        "platform",
        "stopSignal",
        "stopTimeout",
        "mounts",
        "volumes",
        "ports",
        "hosts",
        "ulimits",
        "envs",
        "privileged",
        "devices",
        "deviceRequests",
        "labels",
        "shmSize",
        "logDriver",
        "logOpts",
        "networkMode",
        "networksAdvanced",
        "pidMode",
        "usernsMode",
        "uploads",
        "sysctls",
        "ipcMode",
        "groupAdds",
        "tty",
        "stdinOpen",
        "storageOpts",
        "gpus",
        "cpus",
        "cgroupnsMode",
        "cgroupParent",
        autoname="name",
        deletes_first=True,
    ),
    # network: name :29, labels :36, driver :44, options :52, internal :61, attachable :68,
    # ingress :75, ipv6 :82, ipamDriver :90, ipamOptions :96, ipamConfigs :104
    "docker:index/network:Network": _facts(
        "name",
        "labels",
        "driver",
        "options",
        "internal",
        "attachable",
        "ingress",
        "ipv6",
        "ipamDriver",
        "ipamOptions",
        "ipamConfigs",
        autoname="name",
    ),
    # volume: name :46, labels :52, driver :60, driverOpts :66, cluster (every field, :89-:139)
    "docker:index/volume:Volume": _facts("name", "labels", "driver", "driverOpts", "cluster", autoname="name"),
    # docker:index/image:Image is pulumi-docker's own (not bridged): its Diff reports every changed
    # input as an update, never a replacement, and ignores registry credentials (P-DOCKER
    # provider/provider.go:271-327, :330-347); the update builds and pushes again
    "docker:index/image:Image": _facts(),
    # image (docker_image): name :40, pullTriggers :65, triggers :88, platform :95 (keepLocally in
    # place); P-DOCKER resources.go:130 gives name a field of its own, so it is not auto-named
    "docker:index/remoteImage:RemoteImage": _facts("name", "pullTriggers", "triggers", "platform"),
    # --- random: RANDOM, input :RequiresReplace line ------------------------------------------------
    # keepers :576 (when its values are not null), length :585, special :604, upper :614, lower :624,
    # number :637, numeric :657, minNumeric :674, minUpper :684, minLower :694, minSpecial :704,
    # overrideSpecial :714 (but from "" to null): every input
    "random:index/randomPassword:RandomPassword": _facts(
        "keepers",
        "length",
        "special",
        "upper",
        "lower",
        "number",
        "numeric",
        "minNumeric",
        "minUpper",
        "minLower",
        "minSpecial",
        "overrideSpecial",
    ),
    # --- tls: TLS, file: input :RequiresReplace line; a PEM input replaces when the state holds a PEM
    # (common.go:53-63), which it does once created -----------------------------------------------
    # resource_cert_request.go: privateKeyPem :46, dnsNames :60, ipAddresses :68, uris :81, subject :128
    "tls:index/certRequest:CertRequest": _facts("privateKeyPem", "dnsNames", "ipAddresses", "uris", "subject"),
    # resource_locally_signed_cert.go: caCertPem :54, caPrivateKeyPem :62, certRequestPem :71,
    # validityPeriodHours :79, allowedUses :90, isCaCertificate :111, maxPathLength :120,
    # setSubjectKeyId :148 (earlyRenewalHours in place; past it, the next plan replaces: common_cert.go:310)
    "tls:index/locallySignedCert:LocallySignedCert": _facts(
        "caCertPem",
        "caPrivateKeyPem",
        "certRequestPem",
        "validityPeriodHours",
        "allowedUses",
        "isCaCertificate",
        "maxPathLength",
        "setSubjectKeyId",
    ),
    # resource_private_key.go: algorithm :60, rsaBits :75, ecdsaCurve :84
    "tls:index/privateKey:PrivateKey": _facts("algorithm", "rsaBits", "ecdsaCurve"),
    # resource_self_signed_cert.go: privateKeyPem :55, validityPeriodHours :66, allowedUses :77,
    # dnsNames :97, ipAddresses :105, uris :118, isCaCertificate :147, maxPathLength :156,
    # setSubjectKeyId :169, setAuthorityKeyId :179, subject :247 (earlyRenewalHours in place)
    "tls:index/selfSignedCert:SelfSignedCert": _facts(
        "privateKeyPem",
        "validityPeriodHours",
        "allowedUses",
        "dnsNames",
        "ipAddresses",
        "uris",
        "isCaCertificate",
        "maxPathLength",
        "setSubjectKeyId",
        "setAuthorityKeyId",
        "subject",
    ),
}

REPLACE_ON: dict[str, frozenset[str]] = {t: f.replace_on for t, f in FACTS.items()}
