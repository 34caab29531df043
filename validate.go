package trainyard

import (
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
)

var clusterNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$`)

// ValidateName checks a cluster, project or security group name: 1 to 63 letters, digits, '-',
// '_' or '.', starting with a letter or digit. Names reach nodes (hostnames, logs), so nothing
// else is allowed.
func ValidateName(name string) error {
	if !clusterNameRE.MatchString(name) {
		return fmt.Errorf("must be 1 to 63 characters of letters, digits, '-', '_' or '.', starting with a letter or digit")
	}
	return nil
}

// DefaultMaxUnavailable is what rolling actions use when the request gives none.
const DefaultMaxUnavailable = "25%"

// ResolveMaxUnavailable turns a max_unavailable value ("3" or "25%") into a node count for a
// cluster of workers workers: a percentage is rounded down, and the result is at least 1 (a
// rolling action always makes progress) and at most workers.
func ResolveMaxUnavailable(v string, workers int) (int, error) {
	if v == "" {
		v = DefaultMaxUnavailable
	}
	var n int
	if p, ok := strings.CutSuffix(v, "%"); ok {
		pct, err := strconv.Atoi(p)
		if err != nil || pct < 1 || pct > 100 {
			return 0, fmt.Errorf("a percentage must be 1%% to 100%%, got %q", v)
		}
		n = workers * pct / 100
	} else {
		c, err := strconv.Atoi(v)
		if err != nil || c < 1 {
			return 0, fmt.Errorf("must be a count of at least 1 or a percentage such as \"25%%\", got %q", v)
		}
		n = c
	}
	n = max(n, 1)
	if workers > 0 {
		n = min(n, workers)
	}
	return n, nil
}

// ValidDrain reports whether d is a drain mode ("" means the default, wait).
func ValidDrain(d string) bool {
	return d == "" || d == DrainWait || d == DrainRequeue || d == DrainForce
}

// NormalizeRule checks a security group rule and fills what follows from the rest: protocol
// from protocol_type, and cidr 0.0.0.0/0 for network_type any. It returns every problem found,
// prefixed with the rule's position.
func NormalizeRule(r *SecurityRule, at string, p *Problems) {
	if r.RuleType != "inbound" && r.RuleType != "outbound" {
		p.Add(at+".rule_type", "must be inbound or outbound")
	}
	switch r.ProtocolType {
	case "CustomTCP":
		r.Protocol = checkProtocol(r.Protocol, "TCP", at, p)
	case "CustomUDP":
		r.Protocol = checkProtocol(r.Protocol, "UDP", at, p)
	case "AllTraffic":
		r.Protocol = checkProtocol(r.Protocol, "All", at, p)
		r.Ports = []string{}
	default:
		p.Add(at+".protocol_type", "must be CustomTCP, CustomUDP or AllTraffic")
	}
	if r.ProtocolType == "CustomTCP" || r.ProtocolType == "CustomUDP" {
		if len(r.Ports) == 0 {
			p.Add(at+".ports", "at least one port or range is required for %s", r.ProtocolType)
		}
		for i, port := range r.Ports {
			norm, err := normalizePortRange(port)
			if err != nil {
				p.Add(fmt.Sprintf("%s.ports[%d]", at, i), "%v", err)
				continue
			}
			r.Ports[i] = norm
		}
	}
	switch r.NetworkType {
	case "any":
		r.CIDR = "0.0.0.0/0"
	case "manual":
		pfx, err := netip.ParsePrefix(r.CIDR)
		if err != nil {
			if a, aerr := netip.ParseAddr(r.CIDR); aerr == nil && a.Is4() {
				pfx, err = a.Prefix(32)
			}
		}
		if err != nil || !pfx.Addr().Is4() {
			p.Add(at+".cidr_ip", "must be an IPv4 address or CIDR such as 198.51.100.0/24 when network_type is manual")
		} else {
			r.CIDR = pfx.Masked().String()
		}
	default:
		p.Add(at+".network_type", "must be any or manual")
	}
	if r.CIDRSubnet != "" {
		if pfx, err := netip.ParsePrefix(r.CIDRSubnet); err != nil || !pfx.Addr().Is4() {
			p.Add(at+".cidr_subnet", "must be empty or an IPv4 CIDR such as 198.51.100.0/24")
		} else {
			r.CIDRSubnet = pfx.Masked().String()
		}
	}
	if len(r.Description) > 255 || strings.ContainsFunc(r.Description, func(c rune) bool { return c < 0x20 || c == 0x7f || c == '"' || c == '\\' }) {
		p.Add(at+".description", "must be at most 255 characters, on one line, without quotes or backslashes")
	}
}

func checkProtocol(given, want, at string, p *Problems) string {
	if given != "" && !strings.EqualFold(given, want) {
		p.Add(at+".protocol", "must be %s for this protocol_type", want)
	}
	return want
}

// normalizePortRange accepts "22" or "8000-8100" and returns it in canonical form.
func normalizePortRange(s string) (string, error) {
	lo, hi, isRange := strings.Cut(strings.TrimSpace(s), "-")
	a, err := strconv.Atoi(strings.TrimSpace(lo))
	if err != nil || a < 1 || a > 65535 {
		return "", fmt.Errorf("%q is not a port (1-65535) or range such as 8000-8100", s)
	}
	if !isRange {
		return strconv.Itoa(a), nil
	}
	b, err := strconv.Atoi(strings.TrimSpace(hi))
	if err != nil || b < a || b > 65535 {
		return "", fmt.Errorf("%q is not a port range low-high within 1-65535", s)
	}
	return fmt.Sprintf("%d-%d", a, b), nil
}
