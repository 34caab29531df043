package api_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/trainyard/trainyard/api"
	"github.com/trainyard/trainyard/internal/testenv"
)

// Fuzz targets for request decoding and validation: whatever the body or query, the answer is
// the envelope, never a 500, and a rejected request changes nothing. `go test` runs the seeds;
// `make fuzz` runs each target longer.

// fuzzEnv is a trainyard with one Running cluster, shared by a fuzz target's inputs.
type fuzzEnv struct {
	e       *testenv.Env
	cluster testenv.Cluster
}

func newFuzzEnv(f *testing.F) *fuzzEnv {
	e := testenv.New(f, testenv.Options{OpLatency: time.Millisecond, NoOpenAPI: true})
	c := e.NewCluster(e.Owner, "fuzz", 2)
	return &fuzzEnv{e: e, cluster: c}
}

// do sends a request with the owner's credentials; the answer must be the envelope and not 500.
func (fe *fuzzEnv) do(t *testing.T, method, path, rawQuery string, body []byte) (int, map[string]any) {
	t.Helper()
	q, _ := url.ParseQuery(rawQuery)
	if q == nil {
		q = url.Values{}
	}
	for k, v := range map[string]string{"apikey": fe.e.Owner.APIKey, "project_id": fmt.Sprint(fe.e.Owner.ProjectID), "location": "Delhi"} {
		if !q.Has(k) {
			q.Set(k, v)
		}
	}
	req, err := http.NewRequest(method, fe.e.Server.URL+api.BasePath+path+"?"+q.Encode(), bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+fe.e.Owner.AuthToken)
	resp, err := fe.e.Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var env map[string]any
	if err := json.Unmarshal(raw, &env); err != nil {
		t.Fatalf("%s %s: not JSON: %q", method, path, raw)
	}
	for _, k := range []string{"code", "data", "errors", "message"} {
		if _, ok := env[k]; !ok {
			t.Fatalf("%s %s: envelope without %q: %s", method, path, k, raw)
		}
	}
	if resp.StatusCode >= 500 {
		t.Fatalf("%s %s with %q: %d: %s", method, path, body, resp.StatusCode, raw)
	}
	return resp.StatusCode, env
}

// state is what rejected requests must leave alone: the account's clusters with their actions,
// keys, groups and reserved IPs.
func (fe *fuzzEnv) state(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	for _, p := range []string{"/distributed_jobs_v2/cluster/", fmt.Sprintf("/distributed_jobs_v2/cluster/%d/actions/", fe.cluster.ID),
		"/ssh_keys/", "/security_groups/", "/reserved_ips/", "/projects/"} {
		_, env := fe.do(t, "GET", p, "per_page=100", nil)
		data, _ := json.Marshal(env["data"])
		b.Write(stripObserved(data))
	}
	return b.String()
}

// stripObserved drops what the nodes report by themselves (it changes without any request).
func stripObserved(b []byte) []byte {
	var v any
	json.Unmarshal(b, &v)
	var walk func(any)
	walk = func(x any) {
		switch t := x.(type) {
		case map[string]any:
			for _, k := range []string{"nodes_summary", "available_gpu", "available_cpu", "available_memory"} {
				delete(t, k)
			}
			for _, c := range t {
				walk(c)
			}
		case []any:
			for _, c := range t {
				walk(c)
			}
		}
	}
	walk(v)
	out, _ := json.Marshal(v)
	return out
}

// settle waits until an accepted action has ended, so the next input finds the cluster Running.
func (fe *fuzzEnv) settle(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		_, env := fe.do(t, "GET", fmt.Sprintf("/distributed_jobs_v2/cluster/%d/", fe.cluster.ID), "", nil)
		data, _ := env["data"].(map[string]any)
		last, _ := data["last_action"].(map[string]any)
		if data["status"] == "Running" && (last == nil || last["status"] != "queued" && last["status"] != "running") {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatal("the cluster did not settle")
}

func FuzzClusterAction(f *testing.F) {
	fe := newFuzzEnv(f)
	for _, s := range []string{
		`{"action":"restart_workers"}`, `{"action":"update_image","image_version_id":2,"max_unavailable":"50%","drain":"force"}`,
		`{"action":"scale_cluster","additional_nodes":1}`, `{"action":"update_ssh_keys","ssh_key_ids":[1]}`,
		`{"action":"attach_ip","reserved_ip_id":1}`, `{"action":"detach_ip","reserved_ip_id":1,"ip_type":"reserved"}`,
		`{"action":"add_security_group","security_groups_ids":[1]}`, `{"action":"remove_security_group","security_group_id":1}`,
		`{"action":"scale_cluster","additional_nodes":1e400}`, `{"action":"update_image","image_version_id":-9223372036854775808}`,
		`{"action":"restart_workers","max_unavailable":"%"}`, `{"action":null}`, `[]`, `"x"`, `{"action":"restart_workers"}{}`,
		`{"action":"\u0000"}`, `{"ssh_key_ids":[1,2,3.5]}`, ``, `{`, `{"action":"update_ssh_keys","ssh_key_ids":[9223372036854775807]}`,
	} {
		f.Add([]byte(s), false)
	}
	f.Add([]byte(`{"action":"restart_cluster"}`), true)
	f.Fuzz(func(t *testing.T, body []byte, dryRun bool) {
		before := fe.state(t)
		q := ""
		if dryRun {
			q = "dry_run=true"
		}
		status, _ := fe.do(t, "PUT", testenv.ClusterPath(fe.cluster.ID), q, body)
		if status == http.StatusOK && !dryRun {
			fe.settle(t)
			return
		}
		if after := fe.state(t); after != before {
			t.Fatalf("a request answered %d changed the account:\nbody %q\nbefore %s\nafter  %s", status, body, before, after)
		}
	})
}

func FuzzCreateBodies(f *testing.F) {
	fe := newFuzzEnv(f)
	paths := []string{"/distributed_jobs_v2/cluster/", "/ssh_keys/", "/security_groups/", "/projects/", "/reserved_ips/"}
	for i, s := range []string{
		`{"name":"n1","image_version_id":1,"ssh_key_ids":[1],"security_group_id":1,"sku_id":309,"no_of_nodes":1,"sku_item_price_id":3416}`,
		`{"label":"k","ssh_key":"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAw827B+Zw6jHSytt7LG0pJTEPQdLkzcHq/Ko0N+0EaF x"}`,
		`{"name":"g","rules":[{"rule_type":"inbound","protocol_type":"CustomTCP","network_type":"manual","cidr_ip":"198.51.100.0/24","ports":[22,"80-90"]}]}`,
		`{"name":"p"}`, `{}`, `{"name":"n","no_of_nodes":"1"}`, `{"rules":[{"ports":[{}]}]}`, `{"label":"","ssh_key":"ssh-rsa AAAA\n"}`,
		`{"name":"` + strings.Repeat("x", 300) + `"}`, `{"sfs_mount_list":[{"id":1,"name":"a","mount_path":"/../etc"}]}`,
	} {
		f.Add(uint8(i%len(paths)), []byte(s))
	}
	f.Fuzz(func(t *testing.T, which uint8, body []byte) {
		path := paths[int(which)%len(paths)]
		before := fe.state(t)
		status, _ := fe.do(t, "POST", path, "", body)
		if status >= 400 {
			if after := fe.state(t); after != before {
				t.Fatalf("POST %s answered %d and changed the account (body %q)", path, status, body)
			}
		}
	})
}

func FuzzSecurityGroupRules(f *testing.F) {
	fe := newFuzzEnv(f)
	for _, s := range []string{
		`[]`, `[{"rule_type":"inbound","protocol_type":"AllTraffic","network_type":"any"}]`,
		`[{"rule_type":"outbound","protocol_type":"CustomUDP","network_type":"manual","cidr_ip":"10.0.0.1","ports":["53"]}]`,
		`{"rules":[]}`, `[{"ports":[-1]}]`, `[{"rule_type":"inbound","protocol_type":"CustomTCP","network_type":"any","ports":["1-65536"]}]`,
		`[null]`, `[1,2]`, `[{"cidr_subnet":"1.2.3.4/33"}]`,
	} {
		f.Add([]byte(s))
	}
	gid := fe.cluster.SecurityGroups[0].ID
	f.Fuzz(func(t *testing.T, body []byte) {
		before := fe.state(t)
		status, _ := fe.do(t, "PUT", fmt.Sprintf("/security_groups/%d/rules/", gid), "", body)
		if status >= 400 {
			if after := fe.state(t); after != before {
				t.Fatalf("rules PUT answered %d and changed the account (body %q)", status, body)
			}
		}
	})
}

func FuzzQueries(f *testing.F) {
	fe := newFuzzEnv(f)
	paths := []string{"/distributed_jobs_v2/cluster/", "/distributed_jobs_v2/cluster/1/", "/distributed_jobs_v2/cluster/1/actions/",
		"/ssh_keys/", "/reserved_ips/", "/security_groups/", "/gpu_service/sku/", "/users/iam-accounts/", "/projects/",
		"/distributed_jobs_v2/cluster/1/nodes/", "/audit_log/"}
	for i, q := range []string{"page_no=2&per_page=1", "page_no=-1", "per_page=0", "page_no=99999999999999999999", "project_id=0",
		"location=", "location=Mars", "active_iam=x", "active_iam=999", "service=x", "project_id=1&project_id=2", "%zz", "per_page=1e3"} {
		f.Add(uint8(i), q)
	}
	f.Fuzz(func(t *testing.T, which uint8, rawQuery string) {
		fe.do(t, "GET", paths[int(which)%len(paths)], rawQuery, nil)
	})
}
