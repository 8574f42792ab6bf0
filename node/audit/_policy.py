"""Which witnesses a checkpoint needs (第三十九条; the federation's witness policy).

The rule follows the federation's structure, so that anyone can derive it from a log's origin
and the list of cities:

- a city's log needs the cosignature of its province's node (the province is the region whose
  GB/T 2260 code is the city's first two digits and four zeros);
- the province's log needs a majority of its cities' nodes (⌊n/2⌋ + 1 of the n cities it
  knows), and at least one.

A checkpoint is *witnessed* when its cosignatures meet the rule. The rule is also written in
the C2SP tlog-policy form (:meth:`WitnessRule.policy_text`) with the witness keys known so far,
for verifiers that use standard tooling.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from gateway.identity import Identity, Role, make_identity


def province_of(region: str) -> str:
    """The province of a city's GB/T 2260 code: 350100 -> 350000."""
    return region[:2] + "0000"


@dataclass(frozen=True)
class WitnessRule:
    """All of ``required`` and at least ``at_least`` of ``any_of`` (node identities), and at
    least one cosignature in any case."""

    required: tuple[str, ...] = ()
    any_of: tuple[str, ...] = ()
    at_least: int = 0

    def satisfied(self, cosigned_by: Iterable[str]) -> bool:
        return not self.missing(cosigned_by)

    def missing(self, cosigned_by: Iterable[str]) -> str:
        """What the cosignatures still lack, as a sentence; "" when the rule is met."""
        have = set(cosigned_by)
        lacking = [f"the cosignature of {r}" for r in self.required if r not in have]
        count = len(have & set(self.any_of))
        if count < self.at_least:
            lacking.append(
                f"{self.at_least} of the {len(self.any_of)} cities' cosignatures (has {count})"
            )
        if not lacking and not have:
            lacking.append("a witness's cosignature")
        return "; ".join(lacking)

    def describe(self) -> str:
        parts = [f"the cosignature of {r}" for r in self.required]
        if self.any_of:
            parts.append(f"{self.at_least} of {len(self.any_of)} cities")
        return " and ".join(parts) or "a witness's cosignature"

    def policy_text(self, log_vkey: str, witness_vkeys: Mapping[str, str]) -> str:
        """The rule in tlog-policy form. ``witness_vkeys``: node identity -> the vkey of its
        witness key (those not known yet, because they never cosigned, are named in comments
        and count as absent)."""
        lines = [f"log {log_vkey}"]
        names: dict[str, str] = {}
        for identity in (*self.required, *self.any_of):
            vkey = witness_vkeys.get(identity)
            name = _short(identity)
            if vkey is None:
                lines.append(f"# witness {name}: key not known yet (it has not cosigned)")
                continue
            names[identity] = name
            lines.append(f"witness {name} {vkey}")
        members = []
        for identity in self.required:
            members.append(names.get(identity, ""))
        if self.any_of:
            known = [names[i] for i in self.any_of if i in names]
            if known and self.at_least <= len(known):
                lines.append(f"group cities {self.at_least} {' '.join(known)}")
                members.append("cities")
            else:
                members.append("")
        if all(members) and members:
            if len(members) == 1:
                lines.append(f"quorum {members[0]}")
            else:
                lines.append(f"group required all {' '.join(members)}")
                lines.append("quorum required")
        else:
            lines.append("# quorum: not every witness the rule needs has a known key yet")
        return "\n".join(lines) + "\n"


def _short(identity: str) -> str:
    """A witness's name in the policy: its host (350000.fujian.gov.cn)."""
    return identity.removeprefix("spiffe://").split("/", 1)[0]


def federation_rule(log: Identity, cities: Sequence[str] = ()) -> WitnessRule:
    """The rule for ``log``'s checkpoints; ``cities``: the regions of the province's cities
    (only used for the province's own log)."""
    province = province_of(log.region)
    if log.region != province:
        return WitnessRule(required=(make_identity(province, log.trust_domain, Role.NODE).uri,))
    members = tuple(make_identity(r, log.trust_domain, Role.NODE).uri for r in sorted(set(cities)))
    return WitnessRule(any_of=members, at_least=len(members) // 2 + 1 if members else 0)
