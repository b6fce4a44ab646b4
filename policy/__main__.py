"""mqtt-cluster CrossGuard policy pack: `pulumi preview --policy-pack policy`."""

from pulumi_policy import EnforcementLevel, PolicyPack
from rules import POLICIES

PolicyPack(name="mqtt-cluster", enforcement_level=EnforcementLevel.MANDATORY, policies=POLICIES)
