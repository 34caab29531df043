package api_test

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/trainyard/trainyard/internal/testenv"
)

// Bad input: a clear error in the envelope naming the field, never a 500, never a change.

// snapshot is what a rejected request must leave alone.
func snapshot(e *testenv.Env, clusterID int64) string {
	e.T.Helper()
	r := e.Must(http.StatusOK, e.Owner, "GET", testenv.ClusterPath(clusterID)+"actions/", nil, nil)
	c := e.Must(http.StatusOK, e.Owner, "GET", testenv.ClusterPath(clusterID), nil, nil)
	var cl map[string]any
	c.Into(e.T, &cl)
	delete(cl, "nodes_summary") // observed, may change by itself
	delete(cl, "available_gpu")
	delete(cl, "available_cpu")
	delete(cl, "available_memory")
	return fmt.Sprintf("%v|%s", cl, r.Data)
}

func TestActionValidationErrors(t *testing.T) {
	e := newEnv(t)
	c := e.NewCluster(e.Owner, "v", 2)
	other := e.NewCluster(e.Owner, "other", 1)
	var ipOther struct {
		ID int64 `json:"id"`
	}
	e.Must(http.StatusOK, e.Owner, "POST", "/reserved_ips/", nil, nil).Into(t, &ipOther)
	e.ActOK(e.Owner, other.ID, map[string]any{"action": "attach_ip", "reserved_ip_id": ipOther.ID})
	var ipChennai struct {
		ID int64 `json:"id"`
	}
	chennai := e.Owner
	chennai.Location = "Chennai"
	e.Must(http.StatusOK, chennai, "POST", "/reserved_ips/", nil, nil).Into(t, &ipChennai)
	var ipFree struct {
		ID int64 `json:"id"`
	}
	e.Must(http.StatusOK, e.Owner, "POST", "/reserved_ips/", nil, nil).Into(t, &ipFree)
	sg := c.SecurityGroups[0].ID

	cases := []struct {
		name  string
		body  any
		field string
	}{
		{"no body", "", "action"},
		{"not an object", "[1,2]", "body"},
		{"not JSON", "{action:", "body"},
		{"missing action", map[string]any{}, "action"},
		{"action not a string", map[string]any{"action": 3}, "action"},
		{"unknown action", map[string]any{"action": "reboot_everything"}, "action"},
		{"unknown field", map[string]any{"action": "restart_workers", "force": true}, "force"},
		{"keys missing", map[string]any{"action": "update_ssh_keys"}, "ssh_key_ids"},
		{"keys empty", map[string]any{"action": "update_ssh_keys", "ssh_key_ids": []int{}}, "ssh_key_ids"},
		{"keys wrong type", map[string]any{"action": "update_ssh_keys", "ssh_key_ids": "1"}, "ssh_key_ids"},
		{"key not found", map[string]any{"action": "update_ssh_keys", "ssh_key_ids": []int{999}}, "ssh_key_ids"},
		{"image missing", map[string]any{"action": "update_image"}, "image_version_id"},
		{"image wrong type", map[string]any{"action": "update_image", "image_version_id": "2"}, "image_version_id"},
		{"image fraction", map[string]any{"action": "update_image", "image_version_id": 2.5}, "image_version_id"},
		{"image unknown", map[string]any{"action": "update_image", "image_version_id": 99}, "image_version_id"},
		{"scale missing", map[string]any{"action": "scale_cluster"}, "additional_nodes"},
		{"scale zero", map[string]any{"action": "scale_cluster", "additional_nodes": 0}, "additional_nodes"},
		{"scale negative", map[string]any{"action": "scale_cluster", "additional_nodes": -2}, "additional_nodes"},
		{"scale above cap", map[string]any{"action": "scale_cluster", "additional_nodes": 17}, "additional_nodes"},
		{"scale huge", map[string]any{"action": "scale_cluster", "additional_nodes": 1e12}, "additional_nodes"},
		{"attach missing", map[string]any{"action": "attach_ip"}, "reserved_ip_id"},
		{"attach unknown", map[string]any{"action": "attach_ip", "reserved_ip_id": 999}, "reserved_ip_id"},
		{"attach elsewhere", map[string]any{"action": "attach_ip", "reserved_ip_id": ipOther.ID}, "reserved_ip_id"},
		{"attach other location", map[string]any{"action": "attach_ip", "reserved_ip_id": ipChennai.ID}, "reserved_ip_id"},
		{"detach no type", map[string]any{"action": "detach_ip", "reserved_ip_id": ipFree.ID}, "ip_type"},
		{"detach wrong type", map[string]any{"action": "detach_ip", "reserved_ip_id": ipFree.ID, "ip_type": "public"}, "ip_type"},
		{"detach not attached", map[string]any{"action": "detach_ip", "reserved_ip_id": ipFree.ID, "ip_type": "reserved"}, "reserved_ip_id"},
		{"add sg missing", map[string]any{"action": "add_security_group"}, "security_groups_ids"},
		{"add sg empty", map[string]any{"action": "add_security_group", "security_groups_ids": []int{}}, "security_groups_ids"},
		{"add sg unknown", map[string]any{"action": "add_security_group", "security_groups_ids": []int{999}}, "security_groups_ids"},
		{"add sg already there", map[string]any{"action": "add_security_group", "security_groups_ids": []int64{sg}}, "security_groups_ids"},
		{"remove sg missing", map[string]any{"action": "remove_security_group"}, "security_group_id"},
		{"remove sg not on cluster", map[string]any{"action": "remove_security_group", "security_group_id": 999}, "security_group_id"},
		{"remove last sg", map[string]any{"action": "remove_security_group", "security_group_id": sg}, "security_group_id"},
		{"max_unavailable zero", map[string]any{"action": "restart_workers", "max_unavailable": 0}, "max_unavailable"},
		{"max_unavailable bad percent", map[string]any{"action": "restart_workers", "max_unavailable": "150%"}, "max_unavailable"},
		{"max_unavailable junk", map[string]any{"action": "restart_workers", "max_unavailable": "a lot"}, "max_unavailable"},
		{"max_unavailable on keys", map[string]any{"action": "update_ssh_keys", "ssh_key_ids": []int64{c.SSHKeys[0].PK}, "max_unavailable": 1}, "max_unavailable"},
		{"drain unknown", map[string]any{"action": "restart_workers", "drain": "later"}, "drain"},
	}
	before := snapshot(e, c.ID)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := e.Call(e.Owner, "PUT", testenv.ClusterPath(c.ID), nil, tc.body)
			if r.Status != http.StatusBadRequest {
				t.Fatalf("status %d, want 400: %s", r.Status, r.Raw)
			}
			if len(r.Errors[tc.field]) == 0 {
				t.Errorf("errors %v do not name %q", r.Errors, tc.field)
			}
			if string(r.Data) != "null" {
				t.Errorf("error answer has data %s", r.Data)
			}
		})
	}
	if after := snapshot(e, c.ID); after != before {
		t.Errorf("rejected requests changed the cluster:\nbefore %s\nafter  %s", before, after)
	}
}

func TestCreateClusterValidationErrors(t *testing.T) {
	e := newEnv(t)
	keyID, _ := e.AddKey(e.Owner, "k")
	gid := e.AddGroup(e.Owner, "g", 22)
	valid := func() map[string]any { return testenv.ClusterBody("ok-name", 2, keyID, gid) }
	with := func(k string, v any) map[string]any { b := valid(); b[k] = v; return b }
	without := func(k string) map[string]any { b := valid(); delete(b, k); return b }
	cases := []struct {
		name  string
		body  map[string]any
		field string
	}{
		{"no name", without("name"), "name"},
		{"bad name", with("name", "bad name; rm -rf /"), "name"},
		{"long name", with("name", strings.Repeat("a", 64)), "name"},
		{"no image", without("image_version_id"), "image_version_id"},
		{"unknown image", with("image_version_id", 42), "image_version_id"},
		{"no keys", without("ssh_key_ids"), "ssh_key_ids"},
		{"empty keys", with("ssh_key_ids", []int{}), "ssh_key_ids"},
		{"unknown key", with("ssh_key_ids", []int{4242}), "ssh_key_ids"},
		{"no group", without("security_group_id"), "security_group_id"},
		{"unknown group", with("security_group_id", 4242), "security_group_id"},
		{"no sku", without("sku_id"), "sku_id"},
		{"unknown sku", with("sku_id", 1), "sku_id"},
		{"no nodes", without("no_of_nodes"), "no_of_nodes"},
		{"zero nodes", with("no_of_nodes", 0), "no_of_nodes"},
		{"too many nodes", with("no_of_nodes", 65), "no_of_nodes"},
		{"nodes as string", with("no_of_nodes", "2"), "no_of_nodes"},
		{"no plan", without("sku_item_price_id"), "sku_item_price_id"},
		{"plan of another location", with("sku_item_price_id", 3417), "sku_item_price_id"},
		{"plan of another sku", with("sku_item_price_id", 1201), "sku_item_price_id"},
		{"script without text", with("script_added", true), "lifecycle_script"},
		{"script_added not bool", with("script_added", "yes"), "script_added"},
		{"bad mount", with("sfs_mount_list", []map[string]any{{"id": 1, "name": "x", "mount_path": "relative"}}), "sfs_mount_list[0].mount_path"},
		{"mount wrong shape", with("pfs_mount_list", "x"), "pfs_mount_list"},
		{"unknown field", with("colour", "blue"), "colour"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := e.Call(e.Owner, "POST", "/distributed_jobs_v2/cluster/", nil, tc.body)
			if r.Status != http.StatusBadRequest || len(r.Errors[tc.field]) == 0 {
				t.Fatalf("status %d errors %v, want 400 naming %q", r.Status, r.Errors, tc.field)
			}
		})
	}
	var list []any
	e.Must(http.StatusOK, e.Owner, "GET", "/distributed_jobs_v2/cluster/", nil, nil).Into(t, &list)
	if len(list) != 0 {
		t.Errorf("rejected creates left %d clusters", len(list))
	}
	// Names are unique in a project and location.
	e.Must(http.StatusCreated, e.Owner, "POST", "/distributed_jobs_v2/cluster/", nil, valid())
	r := e.Call(e.Owner, "POST", "/distributed_jobs_v2/cluster/", nil, valid())
	if r.Status != http.StatusBadRequest || len(r.Errors["name"]) == 0 {
		t.Errorf("duplicate name: %d %s", r.Status, r.Raw)
	}
}

func TestAuthErrors(t *testing.T) {
	e := newEnv(t)
	cases := []struct {
		name string
		c    testenv.Creds
	}{
		{"none", testenv.Creds{ProjectID: e.Owner.ProjectID, Location: "Delhi"}},
		{"key only", testenv.Creds{APIKey: e.Owner.APIKey, ProjectID: e.Owner.ProjectID, Location: "Delhi"}},
		{"token only", testenv.Creds{AuthToken: e.Owner.AuthToken, ProjectID: e.Owner.ProjectID, Location: "Delhi"}},
		{"wrong token", testenv.Creds{APIKey: e.Owner.APIKey, AuthToken: "tyt_nope", ProjectID: e.Owner.ProjectID, Location: "Delhi"}},
		{"wrong key", testenv.Creds{APIKey: "tyk_nope", AuthToken: e.Owner.AuthToken, ProjectID: e.Owner.ProjectID, Location: "Delhi"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, path := range []string{"/distributed_jobs_v2/cluster/", "/ssh_keys/", "/gpu_service/image/", "/users/iam-accounts/"} {
				r := e.Call(tc.c, "GET", path, nil, nil)
				if r.Status != http.StatusUnauthorized {
					t.Errorf("GET %s: %d, want 401", path, r.Status)
				}
			}
			r := e.Call(tc.c, "POST", "/distributed_jobs_v2/cluster/", nil, map[string]any{"name": "x"})
			if r.Status != http.StatusUnauthorized {
				t.Errorf("POST cluster: %d, want 401", r.Status)
			}
		})
	}
	// A second key pair of the same user works; both do.
	again, err := e.Svc.Bootstrap(t.Context(), "owner@example.com", "")
	if err != nil {
		t.Fatal(err)
	}
	c2 := testenv.Creds{APIKey: again.APIKey, AuthToken: again.AuthToken, ProjectID: again.ProjectID, Location: "Delhi"}
	e.Must(http.StatusOK, c2, "GET", "/distributed_jobs_v2/cluster/", nil, nil)
	e.Must(http.StatusOK, e.Owner, "GET", "/distributed_jobs_v2/cluster/", nil, nil)
	// Tokens of one pair do not open the other.
	mixed := testenv.Creds{APIKey: again.APIKey, AuthToken: e.Owner.AuthToken, ProjectID: again.ProjectID, Location: "Delhi"}
	e.Must(http.StatusUnauthorized, mixed, "GET", "/distributed_jobs_v2/cluster/", nil, nil)
}

func TestScopeErrors(t *testing.T) {
	e := newEnv(t)
	c := e.NewCluster(e.Owner, "scope", 1)
	noProject := e.Owner
	noProject.ProjectID = 0
	r := e.Call(noProject, "GET", "/distributed_jobs_v2/cluster/", nil, nil)
	if r.Status != http.StatusBadRequest || len(r.Errors["project_id"]) == 0 {
		t.Errorf("missing project_id: %d %s", r.Status, r.Raw)
	}
	r = e.Call(e.Owner, "GET", "/distributed_jobs_v2/cluster/", url.Values{"project_id": {"abc"}, "location": {"Mars"}}, nil)
	if r.Status != http.StatusBadRequest || len(r.Errors["project_id"]) == 0 {
		t.Errorf("bad project_id: %d %s", r.Status, r.Raw)
	}
	r = e.Call(e.Owner, "GET", "/distributed_jobs_v2/cluster/", url.Values{"location": {"Mars"}}, nil)
	if r.Status != http.StatusBadRequest || len(r.Errors["location"]) == 0 {
		t.Errorf("unknown location: %d %s", r.Status, r.Raw)
	}
	r = e.Call(e.Owner, "GET", "/distributed_jobs_v2/cluster/", url.Values{"project_id": {"9999"}}, nil)
	if r.Status != http.StatusBadRequest || len(r.Errors["project_id"]) == 0 {
		t.Errorf("someone else's project: %d %s", r.Status, r.Raw)
	}
	// The cluster exists in Delhi, not in Chennai.
	chennai := e.Owner
	chennai.Location = "Chennai"
	e.Must(http.StatusNotFound, chennai, "GET", testenv.ClusterPath(c.ID), nil, nil)
	e.Must(http.StatusNotFound, chennai, "PUT", testenv.ClusterPath(c.ID), nil, map[string]any{"action": "restart_workers"})
	e.Must(http.StatusNotFound, e.Owner, "GET", testenv.ClusterPath(99999), nil, nil)
	e.Must(http.StatusBadRequest, e.Owner, "GET", "/distributed_jobs_v2/cluster/abc/", nil, nil)
	r = e.Call(e.Owner, "GET", "/distributed_jobs_v2/cluster/", url.Values{"per_page": {"1000"}}, nil)
	if r.Status != http.StatusBadRequest || len(r.Errors["per_page"]) == 0 {
		t.Errorf("per_page 1000: %d %s", r.Status, r.Raw)
	}
	r = e.Call(e.Owner, "GET", "/nope/", nil, nil)
	if r.Status != http.StatusNotFound || r.Message == "" {
		t.Errorf("unknown path: %d %s", r.Status, r.Raw)
	}
	r = e.Call(e.Owner, "PATCH", testenv.ClusterPath(c.ID), nil, nil)
	if r.Status != http.StatusMethodNotAllowed || r.Header.Get("Allow") == "" {
		t.Errorf("PATCH: %d %s", r.Status, r.Raw)
	}
}

func TestBusyClusterAnswers409NamingTheAction(t *testing.T) {
	e := newEnv(t)
	c := e.NewCluster(e.Owner, "busy", 2)
	if _, err := e.Sim.SubmitJob(c.ID, 2, 60e9); err != nil {
		t.Fatal(err)
	}
	r := e.Must(http.StatusOK, e.Owner, "PUT", testenv.ClusterPath(c.ID), nil, map[string]any{"action": "restart_workers"})
	id := r.Header.Get("Trainyard-Action-Id")
	for _, body := range []map[string]any{
		{"action": "restart_cluster"},
		{"action": "scale_cluster", "additional_nodes": 1},
		{"action": "update_image", "image_version_id": 2},
	} {
		r := e.Act(e.Owner, c.ID, body)
		if r.Status != http.StatusConflict || len(r.Errors["current_action_id"]) == 0 || r.Errors["current_action_id"][0] != id {
			t.Errorf("%v while busy: %d %s, want 409 naming action %s", body, r.Status, r.Raw, id)
		}
	}
	e.Must(http.StatusConflict, e.Owner, "DELETE", testenv.ClusterPath(c.ID), nil, nil)
	// Network actions are not node-changing and may run beside it.
	g := e.AddGroup(e.Owner, "side", 80)
	e.Must(http.StatusOK, e.Owner, "PUT", testenv.ClusterPath(c.ID), nil, map[string]any{"action": "add_security_group", "security_groups_ids": []int64{g}})
	var aid int64
	fmt.Sscan(id, &aid)
	e.Must(http.StatusOK, e.Owner, "POST", fmt.Sprintf("%sactions/%d/cancel/", testenv.ClusterPath(c.ID), aid), nil, nil)
	e.WaitAction(e.Owner, c.ID, aid)
}

func TestOversizedBodyIs413(t *testing.T) {
	e := newEnv(t)
	big := `{"label":"x","ssh_key":"` + strings.Repeat("A", 2<<20) + `"}`
	r := e.Call(e.Owner, "POST", "/ssh_keys/", nil, big)
	if r.Status != http.StatusRequestEntityTooLarge {
		t.Errorf("2 MiB body: %d, want 413", r.Status)
	}
}

func TestSSHKeyValidation(t *testing.T) {
	e := newEnv(t)
	good := testenv.NewPublicKey("me@host")
	for name, key := range map[string]string{
		"empty":        "",
		"garbage":      "not a key",
		"bad base64":   "ssh-ed25519 AAAA!!!!",
		"with options": `command="/bin/sh" ` + good,
		"two lines":    good + "\n" + good,
		"private key":  "-----BEGIN OPENSSH PRIVATE KEY-----",
		"control char": good + "\x07",
	} {
		t.Run(name, func(t *testing.T) {
			r := e.Call(e.Owner, "POST", "/ssh_keys/", nil, map[string]any{"label": "x", "ssh_key": key})
			if r.Status != http.StatusBadRequest || len(r.Errors["ssh_key"]) == 0 {
				t.Errorf("%d %s", r.Status, r.Raw)
			}
		})
	}
	e.Must(http.StatusOK, e.Owner, "POST", "/ssh_keys/", nil, map[string]any{"label": "x", "ssh_key": good})
	r := e.Call(e.Owner, "POST", "/ssh_keys/", nil, map[string]any{"label": "again", "ssh_key": good})
	if r.Status != http.StatusBadRequest {
		t.Errorf("duplicate key: %d", r.Status)
	}
	r = e.Call(e.Owner, "POST", "/ssh_keys/", nil, map[string]any{"ssh_key": good})
	if r.Status != http.StatusBadRequest || len(r.Errors["label"]) == 0 {
		t.Errorf("no label: %d %s", r.Status, r.Raw)
	}
	var keys []struct {
		PK int64 `json:"pk"`
	}
	e.Must(http.StatusOK, e.Owner, "GET", "/ssh_keys/", nil, nil).Into(t, &keys)
	if len(keys) != 1 {
		t.Fatalf("%d keys, want 1", len(keys))
	}
	e.Must(http.StatusOK, e.Owner, "DELETE", fmt.Sprintf("/ssh_keys/%d/", keys[0].PK), nil, nil)
	e.Must(http.StatusNotFound, e.Owner, "DELETE", fmt.Sprintf("/ssh_keys/%d/", keys[0].PK), nil, nil)
}

func TestSecurityGroupValidationAndDelete(t *testing.T) {
	e := newEnv(t)
	bad := []struct {
		name  string
		rule  map[string]any
		field string
	}{
		{"rule type", map[string]any{"rule_type": "sideways", "protocol_type": "AllTraffic", "network_type": "any"}, "rules[0].rule_type"},
		{"protocol type", map[string]any{"rule_type": "inbound", "protocol_type": "ICMP", "network_type": "any"}, "rules[0].protocol_type"},
		{"no ports", map[string]any{"rule_type": "inbound", "protocol_type": "CustomTCP", "network_type": "any"}, "rules[0].ports"},
		{"port range", map[string]any{"rule_type": "inbound", "protocol_type": "CustomTCP", "network_type": "any", "ports": []any{70000}}, "rules[0].ports[0]"},
		{"manual without cidr", map[string]any{"rule_type": "inbound", "protocol_type": "CustomTCP", "network_type": "manual", "ports": []int{22}}, "rules[0].cidr_ip"},
		{"unknown rule field", map[string]any{"rule_type": "inbound", "protocol_type": "AllTraffic", "network_type": "any", "x": 1}, "rules[0].x"},
		{"cidr_subnet not a CIDR", map[string]any{"rule_type": "inbound", "protocol_type": "AllTraffic", "network_type": "any", "cidr_subnet": "$(reboot)"}, "rules[0].cidr_subnet"},
		{"description with a newline", map[string]any{"rule_type": "inbound", "protocol_type": "AllTraffic", "network_type": "any", "description": "a\"b\nflush ruleset"}, "rules[0].description"},
	}
	for _, tc := range bad {
		r := e.Call(e.Owner, "POST", "/security_groups/", nil, map[string]any{"name": "g", "rules": []any{tc.rule}})
		if r.Status != http.StatusBadRequest || len(r.Errors[tc.field]) == 0 {
			t.Errorf("%s: %d %v, want 400 naming %s", tc.name, r.Status, r.Errors, tc.field)
		}
	}
	c := e.NewCluster(e.Owner, "sgdel", 1)
	g := c.SecurityGroups[0].ID
	r := e.Call(e.Owner, "DELETE", fmt.Sprintf("/security_groups/%d/", g), nil, nil)
	if r.Status != http.StatusConflict {
		t.Errorf("deleting a group in use: %d %s", r.Status, r.Raw)
	}
	free := e.AddGroup(e.Owner, "free", 80)
	e.Must(http.StatusOK, e.Owner, "GET", fmt.Sprintf("/security_groups/%d/", free), nil, nil)
	e.Must(http.StatusOK, e.Owner, "DELETE", fmt.Sprintf("/security_groups/%d/", free), nil, nil)
	e.Must(http.StatusNotFound, e.Owner, "GET", fmt.Sprintf("/security_groups/%d/", free), nil, nil)
	r = e.Call(e.Owner, "PUT", fmt.Sprintf("/security_groups/%d/rules/", g), nil, map[string]any{"rules": []any{}})
	if r.Status != http.StatusBadRequest {
		t.Errorf("rules PUT with an object, not an array: %d", r.Status)
	}
}

func TestReservedIPRelease(t *testing.T) {
	e := newEnv(t)
	c := e.NewCluster(e.Owner, "rip", 1)
	var ip struct {
		ID        int64  `json:"id"`
		IPAddress string `json:"ip_address"`
	}
	r := e.Must(http.StatusOK, e.Owner, "POST", "/reserved_ips/", nil, nil)
	r.Into(t, &ip)
	if !strings.Contains(r.Message, ip.IPAddress) || !strings.HasPrefix(ip.IPAddress, "198.51.100.") {
		t.Errorf("reserve answered %s", r.Raw)
	}
	e.ActOK(e.Owner, c.ID, map[string]any{"action": "attach_ip", "reserved_ip_id": ip.ID})
	e.Must(http.StatusConflict, e.Owner, "DELETE", fmt.Sprintf("/reserved_ips/%d/", ip.ID), nil, nil)
	e.ActOK(e.Owner, c.ID, map[string]any{"action": "detach_ip", "reserved_ip_id": ip.ID, "ip_type": "reserved"})
	e.Must(http.StatusOK, e.Owner, "DELETE", fmt.Sprintf("/reserved_ips/%d/", ip.ID), nil, nil)
	e.Must(http.StatusNotFound, e.Owner, "DELETE", fmt.Sprintf("/reserved_ips/%d/", ip.ID), nil, nil)
}
