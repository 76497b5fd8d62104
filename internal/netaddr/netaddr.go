// Package netaddr classifies IP addresses the way Chatwoot's SSRF filter
// does, for doctor's check of public_url and for bridge's own downloads.
package netaddr

import "net/netip"

// The ranges Chatwoot (4.14+, through the ssrf_filter gem 1.5.0) refuses to
// deliver webhooks to: private, loopback, link-local, CGNAT, documentation,
// multicast and reserved.
var (
	blockedV4 = prefixes("0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
		"172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24",
		"203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4", "255.255.255.255/32")
	blockedV6 = prefixes("::1/128", "fc00::/7", "fe80::/10", "ff00::/8", "100::/64", "2001::/32",
		"2001:db8::/32", "2002::/16")
	// IPv6 forms that embed an IPv4 address in their last 32 bits:
	// IPv4-mapped, IPv4-compatible and NAT64.
	embedsV4 = prefixes("::ffff:0:0/96", "::/96", "64:ff9b::/96")
)

func prefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

func inAny(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Private reports whether a is not a public address: private, loopback,
// link-local, CGNAT, documentation, multicast or reserved, in IPv4 or IPv6,
// including IPv4 ranges embedded in IPv6. An invalid address counts as
// private.
func Private(a netip.Addr) bool {
	a = a.WithZone("")
	if a.Is4() {
		return inAny(blockedV4, a)
	}
	if inAny(blockedV6, a) {
		return true
	}
	if inAny(embedsV4, a) {
		b := a.As16()
		return inAny(blockedV4, netip.AddrFrom4([4]byte(b[12:])))
	}
	return !a.IsValid()
}
