package trainyard_test

import (
	"testing"

	"github.com/trainyard/trainyard"
)

func TestResolveMaxUnavailable(t *testing.T) {
	cases := []struct {
		v       string
		workers int
		want    int
		bad     bool
	}{
		{"", 8, 2, false},     // default 25%
		{"", 3, 1, false},     // at least 1
		{"25%", 10, 2, false}, // rounded down
		{"100%", 5, 5, false},
		{"3", 10, 3, false},
		{"30", 4, 4, false}, // at most every worker
		{"0", 4, 0, true},
		{"-1", 4, 0, true},
		{"0%", 4, 0, true},
		{"101%", 4, 0, true},
		{"x%", 4, 0, true},
		{"two", 4, 0, true},
	}
	for _, c := range cases {
		got, err := trainyard.ResolveMaxUnavailable(c.v, c.workers)
		if c.bad != (err != nil) || got != c.want {
			t.Errorf("ResolveMaxUnavailable(%q, %d) = %d, %v; want %d, bad %v", c.v, c.workers, got, err, c.want, c.bad)
		}
	}
}

func TestValidateName(t *testing.T) {
	for _, ok := range []string{"a", "train-01", "x_y.z", "A1234567890123456789012345678901234567890123456789012345678901b"} {
		if err := trainyard.ValidateName(ok); err != nil {
			t.Errorf("%q refused: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "-a", ".a", "a b", "a;b", "a/b", "ä", "$(id)", string(make([]byte, 64))} {
		if err := trainyard.ValidateName(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestNormalizeRule(t *testing.T) {
	r := trainyard.SecurityRule{RuleType: "inbound", ProtocolType: "CustomTCP", NetworkType: "manual", CIDR: "198.51.100.7", Ports: []string{" 22", "8000 - 8100"}}
	var p trainyard.Problems
	trainyard.NormalizeRule(&r, "rules[0]", &p)
	if err := p.Err(); err != nil {
		t.Fatal(err)
	}
	if r.Protocol != "TCP" || r.CIDR != "198.51.100.7/32" || r.Ports[0] != "22" || r.Ports[1] != "8000-8100" {
		t.Errorf("normalised rule: %+v", r)
	}
	all := trainyard.SecurityRule{RuleType: "outbound", ProtocolType: "AllTraffic", NetworkType: "any", Ports: []string{"1"}}
	trainyard.NormalizeRule(&all, "r", &p)
	if all.Protocol != "All" || all.CIDR != "0.0.0.0/0" || len(all.Ports) != 0 {
		t.Errorf("AllTraffic rule: %+v", all)
	}
	bad := trainyard.SecurityRule{RuleType: "inbound", ProtocolType: "CustomUDP", Protocol: "TCP", NetworkType: "manual", CIDR: "::1/128", Ports: []string{"9-1"}}
	var q trainyard.Problems
	trainyard.NormalizeRule(&bad, "r", &q)
	err, _ := q.Err().(*trainyard.Error)
	if err == nil || len(err.Fields["r.protocol"]) == 0 || len(err.Fields["r.cidr_ip"]) == 0 || len(err.Fields["r.ports[0]"]) == 0 {
		t.Errorf("bad rule problems: %v", q.Err())
	}
}

func TestSettle(t *testing.T) {
	a := &trainyard.Action{ID: 7, Type: trainyard.ActionCreateCluster}
	c := &trainyard.Cluster{Status: trainyard.StatusCreating, CurrentActionID: 7}
	c.Settle(a, trainyard.ActionFailed)
	if c.Status != trainyard.StatusFailed || c.CurrentActionID != 0 {
		t.Errorf("failed create: %+v", c)
	}
	other := &trainyard.Cluster{Status: trainyard.StatusUpdating, CurrentActionID: 8}
	other.Settle(a, trainyard.ActionSucceeded)
	if other.CurrentActionID != 8 || other.Status != trainyard.StatusUpdating {
		t.Errorf("settling an action that does not hold the slot changed the cluster: %+v", other)
	}
	net := &trainyard.Action{ID: 9, Type: trainyard.ActionAttachIP}
	c2 := &trainyard.Cluster{Status: trainyard.StatusUpdating, CurrentActionID: 8}
	c2.Settle(net, trainyard.ActionSucceeded)
	if c2.CurrentActionID != 8 {
		t.Errorf("a network action released the slot")
	}
}
