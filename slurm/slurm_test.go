package slurm

import (
	"strings"
	"testing"

	"github.com/trainyard/trainyard"
)

func TestRenderHasNoStaticNodes(t *testing.T) {
	conf := Config{ClusterName: "c3", ControllerName: "c3-ctl", ControllerAddr: "198.18.3.2", MungeSocket: "/run/m.sock",
		StateDir: "/s", SpoolDir: "/sp", RunDir: "/r", LogDir: "/l", MaxNodes: 65}.Render()
	for _, want := range []string{"SlurmctldHost=c3-ctl(198.18.3.2)\n", "AuthInfo=socket=/run/m.sock\n", "MaxNodeCount=65\n",
		"SlurmdSpoolDir=/sp/%n\n", "PartitionName=main Nodes=ALL Default=YES"} {
		if !strings.Contains(conf, want) {
			t.Errorf("slurm.conf lacks %q:\n%s", want, conf)
		}
	}
	if strings.Contains(conf, "\nNodeName=") {
		t.Error("slurm.conf lists static nodes")
	}
}

func TestParseNodes(t *testing.T) {
	out := `NodeName=c3-w1 Arch=x86_64 CoresPerSocket=1 CPUAlloc=0 CPUEfctv=1 State=IDLE+DYNAMIC_NORM ThreadsPerCore=1 Partitions=main BootTime=2026-12-03T16:19:01
NodeName=c3-w2 Arch=x86_64 CPUAlloc=1 State=ALLOCATED+DRAIN+DYNAMIC_NORM Partitions=main Reason=trainyard:action 4 restart_workers [root@2026-12-03T16:58:00]
NodeName=c3-w3 State=IDLE+DRAIN+DYNAMIC_NORM Reason=admin: bad DIMM [alice@2026-12-03T10:00:00]
NodeName=c3-w4 State=DOWN*+DYNAMIC_NORM Reason=Not responding [slurm@2026-12-03T16:58:00]
NodeName=c3-w5 State=MIXED ThreadsPerCore=1
NodeName=c3-w6 State=IDLE*+DYNAMIC_NORM
`
	got := ParseNodes(out)
	want := []Node{
		{Name: "c3-w1", State: trainyard.NodeIdle},
		{Name: "c3-w2", State: trainyard.NodeDraining, Reason: "trainyard:action 4 restart_workers"},
		{Name: "c3-w3", State: trainyard.NodeDrained, Reason: "admin: bad DIMM"},
		{Name: "c3-w4", State: trainyard.NodeDown, Reason: "Not responding"},
		{Name: "c3-w5", State: trainyard.NodeMixed},
		{Name: "c3-w6", State: trainyard.NodeDown},
	}
	if len(got) != len(want) {
		t.Fatalf("parsed %d nodes: %+v", len(got), got)
	}
	for i := range want {
		if got[i].Name != want[i].Name || got[i].State != want[i].State || got[i].Reason != want[i].Reason {
			t.Errorf("node %d: got %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestUnknownStatesFailClosed(t *testing.T) {
	for _, s := range []string{"", "WEIRD", "INVAL"} {
		if MapState(s) != trainyard.NodeDown {
			t.Errorf("%q maps to %s, want down", s, MapState(s))
		}
	}
}
