// Package slurm renders the Slurm configuration of a trainyard cluster and parses what Slurm's
// commands print. It runs nothing: backends run the commands and hand the output here, so every
// rule about Slurm's formats is tested without a Slurm installation.
package slurm

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/trainyard/trainyard"
)

// Config is what a cluster's slurm.conf says.
type Config struct {
	ClusterName    string
	ControllerName string // the controller's hostname
	ControllerAddr string // its address (never loopback: nodes in their own network namespaces dial it)
	MungeSocket    string
	StateDir       string // slurmctld's StateSaveLocation
	SpoolDir       string // parent of per-node spool directories
	RunDir         string // pid files
	LogDir         string
	MaxNodes       int // MaxNodeCount: workers join as dynamic nodes up to this many
}

// Render returns slurm.conf. Every worker is a dynamic node (slurmd -Z), so the file lists no
// nodes and never changes when the cluster scales: slurmctld is not restarted to add a node.
func (c Config) Render() string {
	var b strings.Builder
	line := func(k, v string) { fmt.Fprintf(&b, "%s=%s\n", k, v) }
	b.WriteString("# Written by trainyard. Workers are dynamic nodes (slurmd -Z).\n")
	line("ClusterName", c.ClusterName)
	line("SlurmctldHost", fmt.Sprintf("%s(%s)", c.ControllerName, c.ControllerAddr))
	line("SlurmUser", "root")
	line("AuthType", "auth/munge")
	line("AuthInfo", "socket="+c.MungeSocket)
	line("CredType", "cred/munge")
	line("ProctrackType", "proctrack/linuxproc")
	line("TaskPlugin", "task/none")
	line("SelectType", "select/cons_tres")
	line("SchedulerType", "sched/backfill")
	line("AccountingStorageType", "accounting_storage/none")
	line("JobAcctGatherType", "jobacct_gather/none")
	line("JobCompType", "jobcomp/none")
	line("MpiDefault", "none")
	line("StateSaveLocation", c.StateDir)
	line("SlurmdSpoolDir", c.SpoolDir+"/%n")
	line("SlurmctldPidFile", c.RunDir+"/slurmctld.pid")
	line("SlurmdPidFile", c.RunDir+"/slurmd-%n.pid")
	line("SlurmctldLogFile", c.LogDir+"/slurmctld.log")
	line("SlurmdLogFile", c.LogDir+"/slurmd-%n.log")
	line("SlurmctldPort", "6817")
	line("SlurmdPort", "6818")
	line("MaxNodeCount", fmt.Sprint(c.MaxNodes))
	line("TreeWidth", "65533")
	// A node that comes back from a restart returns to service by itself; drains survive.
	line("ReturnToService", "2")
	line("SlurmdTimeout", "60")
	line("PartitionName", "main Nodes=ALL Default=YES MaxTime=INFINITE State=UP")
	return b.String()
}

// Node is a node as `scontrol show node --oneliner` reports it.
type Node struct {
	Name   string
	State  string // one of trainyard's Node* states
	Raw    string // Slurm's own state, e.g. IDLE+DRAIN
	Reason string // the drain or down reason, without Slurm's [user@time] suffix
}

var reasonRE = regexp.MustCompile(` Reason=(.*?) \[[^\]]*@[^\]]*\]`)

// ParseNodes parses the output of `scontrol show node --oneliner`, one node a line.
func ParseNodes(out string) []Node {
	var nodes []Node
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "NodeName=") {
			continue
		}
		var n Node
		for _, f := range strings.Fields(line) {
			k, v, _ := strings.Cut(f, "=")
			switch k {
			case "NodeName":
				n.Name = v
			case "State":
				n.Raw = v
			}
		}
		if m := reasonRE.FindStringSubmatch(line); m != nil {
			n.Reason = m[1]
		} else if i := strings.Index(line, " Reason="); i >= 0 {
			n.Reason = strings.TrimSpace(line[i+len(" Reason="):])
		}
		n.State = MapState(n.Raw)
		nodes = append(nodes, n)
	}
	return nodes
}

// MapState maps a Slurm node state (IDLE, ALLOCATED+DRAIN, DOWN*, IDLE+DYNAMIC_NORM, ...) to
// trainyard's states. Anything it does not know is down: an unknown state never counts as
// available (fail closed).
func MapState(raw string) string {
	notResponding := strings.Contains(raw, "*")
	parts := strings.Split(strings.ReplaceAll(raw, "*", ""), "+")
	base, flags := parts[0], parts[1:]
	has := func(f string) bool {
		for _, x := range flags {
			if x == f {
				return true
			}
		}
		return false
	}
	switch {
	case base == "DOWN" || notResponding || has("NOT_RESPONDING"):
		return trainyard.NodeDown
	case has("REBOOT_REQUESTED") || has("REBOOT_ISSUED") || has("POWERING_UP") || base == "FUTURE" || base == "UNKNOWN":
		return trainyard.NodeBooting
	case has("DRAIN"):
		if base == "ALLOCATED" || base == "MIXED" || has("COMPLETING") {
			return trainyard.NodeDraining
		}
		return trainyard.NodeDrained
	case base == "DRAINING":
		return trainyard.NodeDraining
	case base == "DRAINED":
		return trainyard.NodeDrained
	case base == "IDLE":
		return trainyard.NodeIdle
	case base == "ALLOCATED" || base == "COMPLETING":
		return trainyard.NodeAllocated
	case base == "MIXED":
		return trainyard.NodeMixed
	}
	return trainyard.NodeDown
}
