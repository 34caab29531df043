package main_test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/trainyard/trainyard"
	"github.com/trainyard/trainyard/backend/sim"
	"github.com/trainyard/trainyard/internal/testenv"
)

// TestCrashPoints kills the server with SIGKILL at a random point of an action, many times over
// every node-changing and network action type, restarting it each time. Every accepted action
// must reach a terminal state, succeed, and leave the cluster as it promised; at the end every
// node must have restarted exactly as often as the actions asked (nothing lost, nothing twice).
// TRAINYARD_CRASH_TRIALS sets the number of trials (default 100; `make faults` runs more).
func TestCrashPoints(t *testing.T) {
	trials := 100
	if v, err := strconv.Atoi(os.Getenv("TRAINYARD_CRASH_TRIALS")); err == nil && v > 0 {
		trials = v
	}
	data := t.TempDir()
	owner := command(t, "bootstrap", "--data", data, "--email", "owner@example.com")
	addr := freeAddr(t)
	const latency = 10 * time.Millisecond
	srv := startServer(t, data, addr, latency)
	c := newClient(t, "http://"+addr, owner)
	id := newCluster(c, "crash", 2)

	var k2 struct {
		PK int64 `json:"pk"`
	}
	c.must(200, "POST", "/ssh_keys/", map[string]any{"label": "k2", "ssh_key": testenv.NewPublicKey("k2")}, &k2)
	var g2 struct {
		ID int64 `json:"id"`
	}
	c.must(201, "POST", "/security_groups/", map[string]any{"name": "extra", "rules": []any{
		map[string]any{"rule_type": "inbound", "protocol_type": "CustomTCP", "network_type": "any", "ports": []int{8080}}}}, &g2)
	var ip struct {
		ID        int64  `json:"id"`
		IPAddress string `json:"ip_address"`
	}
	c.must(200, "POST", "/reserved_ips/", nil, &ip)

	ctl := fmt.Sprintf("c%d-ctl", id)
	boots := map[string]int{ctl: 1}
	workers := 2
	for i := 1; i <= workers; i++ {
		boots[fmt.Sprintf("c%d-w%d", id, i)] = 1
	}
	image, keys, attached, extraGroup := 1, 1, false, false
	rng := rand.New(rand.NewPCG(42, uint64(trials)))
	for trial := 0; trial < trials; trial++ {
		var body map[string]any
		restartWorkers, restartController := false, false
		switch kind := trial % 7; {
		case kind == 0 || kind == 6 && workers >= 5:
			body = map[string]any{"action": "restart_workers", "max_unavailable": 1 + rng.IntN(2)}
			restartWorkers = true
		case kind == 1:
			image = 3 - image
			body = map[string]any{"action": "update_image", "image_version_id": image, "max_unavailable": "50%"}
			restartWorkers, restartController = true, true
		case kind == 2:
			ids := []int64{1}
			if keys == 1 {
				ids = append(ids, k2.PK)
			}
			keys = len(ids)
			body = map[string]any{"action": "update_ssh_keys", "ssh_key_ids": ids}
		case kind == 3:
			body = map[string]any{"action": "restart_cluster", "drain": "force"}
			restartWorkers, restartController = true, true
		case kind == 4 && !attached:
			body = map[string]any{"action": "attach_ip", "reserved_ip_id": ip.ID}
			attached = true
		case kind == 4:
			body = map[string]any{"action": "detach_ip", "reserved_ip_id": ip.ID, "ip_type": "reserved"}
			attached = false
		case kind == 5 && !extraGroup:
			body = map[string]any{"action": "add_security_group", "security_groups_ids": []int64{g2.ID}}
			extraGroup = true
		case kind == 5:
			body = map[string]any{"action": "remove_security_group", "security_group_id": g2.ID}
			extraGroup = false
		default: // 6
			body = map[string]any{"action": "scale_cluster", "additional_nodes": 1}
			workers++
			boots[fmt.Sprintf("c%d-w%d", id, workers)] = 1
		}
		h := c.must(http.StatusOK, "PUT", fmt.Sprintf("/distributed_jobs_v2/cluster/%d/", id), body, nil)
		aid := actionID(t, h)
		time.Sleep(time.Duration(rng.IntN(200)) * time.Millisecond)
		srv.kill()
		srv = startServer(t, data, addr, latency)
		a := c.waitAction(id, aid, 60*time.Second)
		if a.Status != "succeeded" {
			t.Fatalf("trial %d, %v, killed and restarted: %s %s\n%s", trial, body["action"], a.Status, a.Error, srv.log)
		}
		for name := range boots {
			isCtl := name == ctl
			if isCtl && restartController || !isCtl && restartWorkers {
				boots[name]++
			}
		}
		// The cluster is as the action promised, as the nodes report it.
		var nodes []struct {
			Name          string `json:"name"`
			Role          string `json:"role"`
			Status        string `json:"status"`
			DrainReason   string `json:"drain_reason"`
			ImageVersion  string `json:"image_version"`
			ReservedIP    string `json:"reserved_ip"`
			SSHKeyCount   int    `json:"ssh_key_count"`
			SecurityRules int    `json:"security_rules"`
		}
		c.must(http.StatusOK, "GET", fmt.Sprintf("/distributed_jobs_v2/cluster/%d/nodes/", id), nil, &nodes)
		if len(nodes) != workers+1 {
			t.Fatalf("trial %d: %d nodes, want %d", trial, len(nodes), workers+1)
		}
		wantRules := 0 // the cluster's first group has no rules
		if extraGroup {
			wantRules = 1
		}
		for _, n := range nodes {
			bad := n.DrainReason != "" || n.ImageVersion != fmt.Sprintf("v%d-slurm22.05-debian12", image) || n.SSHKeyCount != keys
			if n.Role == trainyard.RoleController && (attached != (n.ReservedIP == ip.IPAddress)) {
				bad = true
			}
			if bad {
				t.Fatalf("trial %d (%v): node %+v; want image %d, %d keys, attached %v", trial, body["action"], n, image, keys, attached)
			}
			if n.SecurityRules != wantRules {
				// The network converges level-triggered; give the drift pass a moment.
				time.Sleep(2 * time.Second)
				c.must(http.StatusOK, "GET", fmt.Sprintf("/distributed_jobs_v2/cluster/%d/nodes/", id), nil, &nodes)
				for _, m := range nodes {
					if m.SecurityRules != wantRules {
						t.Fatalf("trial %d: node %s has %d rules, want %d", trial, m.Name, m.SecurityRules, wantRules)
					}
				}
				break
			}
		}
	}
	srv.kill()
	b, err := sim.New(sim.Options{StatePath: filepath.Join(data, "sim-nodes.json")})
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range boots {
		n, ok := b.Node(trainyard.NodeRef{ClusterID: id, Name: name})
		if !ok || n.Boots != want {
			t.Errorf("%s: booted %d times, want %d (every restart exactly once)", name, n.Boots, want)
		}
	}
	raw, _ := json.Marshal(boots)
	t.Logf("%d trials; boots %s", trials, raw)
}
