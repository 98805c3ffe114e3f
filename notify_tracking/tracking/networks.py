"""Membership of an IP address in a large list of networks, fast.

Apple publishes the egress ranges of its relays (used by Mail Privacy Protection and
iCloud Private Relay) as a CSV of tens of thousands of networks. Testing an address
against each would cost the pixel view milliseconds, so the networks are grouped by
prefix length: a lookup masks the address once per distinct length (at most 33 for
IPv4, 129 for IPv6, a dozen or so in practice) and asks a set.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

logger = logging.getLogger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class NetworkSet:
    """A set of IP networks that answers ``address in networks``."""

    def __init__(self, networks: Iterable[Network]):
        self._by_prefix: dict[tuple[int, int], set[int]] = {}
        self.size = 0
        for network in networks:
            key = (network.version, network.prefixlen)
            self._by_prefix.setdefault(key, set()).add(int(network.network_address))
            self.size += 1

    def __contains__(self, address: object) -> bool:
        try:
            ip = ipaddress.ip_address(address)  # type: ignore[arg-type]
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        bits = 32 if ip.version == 4 else 128
        value = int(ip)
        for (version, prefix), starts in self._by_prefix.items():
            if version != ip.version:
                continue
            mask = ((1 << prefix) - 1) << (bits - prefix) if prefix else 0
            if value & mask in starts:
                return True
        return False

    def __len__(self) -> int:
        return self.size


def parse_networks(value: str | Iterable[str]) -> list[Network]:
    """Networks from a list of CIDR strings, or from a file of them.

    A file has one network per line, as the first comma-separated field (the format
    of Apple's ``egress-ip-ranges.csv``); blank lines and ``#`` comments are skipped.
    Raises ``ImproperlyConfigured`` naming the first bad entry.
    """
    lines: Sequence[tuple[int | None, str]]
    if isinstance(value, (str, Path)):
        lines = _read_lines(Path(value))
    else:
        lines = [(None, item) for item in value]
    networks = []
    for line_number, entry in lines:
        where = f"line {line_number}" if line_number else "entry"
        try:
            networks.append(ipaddress.ip_network(str(entry).strip(), strict=False))
        except ValueError as error:
            raise ImproperlyConfigured(
                f"{where} {entry!r} is not an IP network ({error})"
            ) from None
    return networks


def _read_lines(path: Path) -> list[tuple[int, str]]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ImproperlyConfigured(f"cannot read the network list {str(path)!r}: {error}") from None
    lines = []
    for number, line in enumerate(text.splitlines(), start=1):
        field = line.split(",", 1)[0].strip()
        if field and not field.startswith("#"):
            lines.append((number, field))
    return lines
