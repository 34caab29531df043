package local

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/trainyard/trainyard"
)

// applyNetwork makes the node's firewall and reserved IP what spec says and records spec in n.
func (b *Backend) applyNetwork(ctx context.Context, c clusterInfo, n *nodeInfo, spec trainyard.NetworkSpec) error {
	rules, err := Ruleset(c.prefix(), c.gateway(), spec.Rules)
	if err != nil {
		return err
	}
	path := filepath.Join(b.nodeDir(c.ID, n.Name), "nftables.conf")
	if err := writeFileAtomic(path, []byte(rules), 0o644); err != nil {
		return err
	}
	if _, err := b.run(ctx, "nsenter", "--net="+b.netnsPath(n.Name), "--", "nft", "-f", path); err != nil {
		return err
	}
	if n.Role == trainyard.RoleController && n.Network.ReservedIP != spec.ReservedIP {
		if old := n.Network.ReservedIP; old != "" {
			b.run(ctx, "ip", "-n", b.netns(n.Name), "addr", "del", old+"/32", "dev", "eth0")
			b.run(ctx, "ip", "route", "del", old+"/32", "proto", routeProto)
		}
		if ip := spec.ReservedIP; ip != "" {
			a, err := netip.ParseAddr(ip)
			if err != nil || !a.Is4() {
				return fmt.Errorf("local: reserved IP %q is not an IPv4 address", ip)
			}
			if !b.inPools(a) {
				return fmt.Errorf("local: reserved IP %s is outside the configured pools", a)
			}
			if _, err := b.run(ctx, "ip", "-n", b.netns(n.Name), "addr", "replace", a.String()+"/32", "dev", "eth0"); err != nil {
				return err
			}
			if _, err := b.run(ctx, "ip", "route", "replace", a.String()+"/32", "via", n.Address, "dev", b.bridge(c.ID), "proto", routeProto); err != nil {
				return err
			}
		}
	}
	n.Network = spec
	return nil
}

func (b *Backend) inPools(a netip.Addr) bool {
	for _, p := range b.opts.IPPools {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Ruleset renders a node's nftables ruleset. Traffic between the cluster's nodes is always
// accepted, whatever the groups say (Slurm, ssh between nodes); the host, as the gateway,
// reaches Slurm's ports for the control plane; everything else from outside is dropped unless a
// group's inbound rule accepts it. Outbound traffic is accepted unless some group has outbound
// rules, in which case only those (and the cluster itself) are.
func Ruleset(subnet netip.Prefix, gateway netip.Addr, rules []trainyard.SecurityRule) (string, error) {
	var in, out []string
	for i, r := range rules {
		line, err := ruleLine(r)
		if err != nil {
			return "", fmt.Errorf("rule %d: %w", i, err)
		}
		if r.RuleType == "outbound" {
			out = append(out, line)
		} else {
			in = append(in, line)
		}
	}
	var b strings.Builder
	b.WriteString("# Written by trainyard.\n")
	// Declaring the table first makes the delete succeed on the first run too; the ruleset is
	// applied in one transaction, so there is no moment without rules.
	b.WriteString("table inet trainyard {}\ndelete table inet trainyard\n")
	b.WriteString("table inet trainyard {\n")
	b.WriteString("  chain input {\n    type filter hook input priority 0; policy drop;\n")
	b.WriteString("    iif \"lo\" accept\n    ct state established,related accept\n")
	fmt.Fprintf(&b, "    ip saddr %s ip saddr != %s accept\n", subnet, gateway)
	fmt.Fprintf(&b, "    ip saddr %s tcp dport { 6817, 6818 } accept\n", gateway)
	for _, l := range in {
		b.WriteString("    " + l + " accept\n")
	}
	b.WriteString("  }\n")
	policy := "accept"
	if len(out) > 0 {
		policy = "drop"
	}
	fmt.Fprintf(&b, "  chain output {\n    type filter hook output priority 0; policy %s;\n", policy)
	b.WriteString("    oif \"lo\" accept\n    ct state established,related accept\n")
	fmt.Fprintf(&b, "    ip daddr %s accept\n", subnet)
	for _, l := range out {
		b.WriteString("    " + l + " accept\n")
	}
	b.WriteString("  }\n}\n")
	return b.String(), nil
}

// ruleLine renders the match of one rule from values checked again here: nothing but parsed
// numbers and prefixes reaches the ruleset.
func ruleLine(r trainyard.SecurityRule) (string, error) {
	cidr := r.CIDR
	if cidr == "" {
		cidr = "0.0.0.0/0"
	}
	p, err := netip.ParsePrefix(cidr)
	if err != nil || !p.Addr().Is4() {
		return "", fmt.Errorf("bad CIDR %q", r.CIDR)
	}
	dir := "saddr"
	if r.RuleType == "outbound" {
		dir = "daddr"
	}
	addr := fmt.Sprintf("ip %s %s", dir, p.Masked())
	var proto string
	switch r.ProtocolType {
	case "CustomTCP":
		proto = "tcp"
	case "CustomUDP":
		proto = "udp"
	case "AllTraffic":
		return addr, nil
	default:
		return "", fmt.Errorf("unknown protocol_type %q", r.ProtocolType)
	}
	var ports []string
	for _, s := range r.Ports {
		lo, hi, isRange := strings.Cut(s, "-")
		a, err1 := strconv.Atoi(lo)
		if err1 != nil || a < 1 || a > 65535 {
			return "", fmt.Errorf("bad port %q", s)
		}
		if !isRange {
			ports = append(ports, strconv.Itoa(a))
			continue
		}
		z, err2 := strconv.Atoi(hi)
		if err2 != nil || z < a || z > 65535 {
			return "", fmt.Errorf("bad port range %q", s)
		}
		ports = append(ports, fmt.Sprintf("%d-%d", a, z))
	}
	if len(ports) == 0 {
		return "", fmt.Errorf("no ports")
	}
	return fmt.Sprintf("%s %s dport { %s }", addr, proto, strings.Join(ports, ", ")), nil
}
