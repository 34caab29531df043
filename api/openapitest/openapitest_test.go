package openapitest

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/trainyard/trainyard/api"
	"github.com/trainyard/trainyard/backend/sim"
	"github.com/trainyard/trainyard/config"
	"github.com/trainyard/trainyard/reconcile"
	"github.com/trainyard/trainyard/service"
	"github.com/trainyard/trainyard/store"
)

func TestDocument(t *testing.T) {
	v := New(t)
	if err := v.Doc().Validate(context.Background()); err != nil {
		t.Fatalf("doc.Validate: %v", err)
	}
	if got := v.Doc().OpenAPI; got != "3.0.3" {
		t.Errorf("openapi = %q, want 3.0.3", got)
	}
	// Every operation under the base path needs both credentials; the operational ones none.
	for path, item := range v.Doc().Paths.Map() {
		for method, op := range item.Operations() {
			public := !strings.HasPrefix(path, api.BasePath+"/")
			sec := v.Doc().Security
			if op.Security != nil {
				sec = *op.Security
			}
			switch {
			case public && len(sec) != 0:
				t.Errorf("%s %s: public endpoint has security %v", method, path, sec)
			case !public && (len(sec) != 1 || len(sec[0]) != 2):
				t.Errorf("%s %s: security = %v, want apikey and bearer together", method, path, sec)
			}
			if !public && !strings.HasSuffix(path, "/") {
				t.Errorf("%s %s: API paths end with a slash", method, path)
			}
		}
	}
}

// recorder is a testing.TB that keeps what Errorf reports instead of failing.
type recorder struct {
	testing.TB
	mu   sync.Mutex
	msgs []string
}

func (r *recorder) Helper() {}

func (r *recorder) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, fmt.Sprintf(format, args...))
}

func TestValidatorCatchesDrift(t *testing.T) {
	v := New(t)
	jsonHeader := http.Header{"Content-Type": {"application/json"}}
	get := func(path string) *http.Request { return httptest.NewRequest(http.MethodGet, path, nil) }
	good := `{"code":200,"data":"ok","errors":{},"message":"ok"}`
	if err := v.Validate(get("/healthz"), 200, jsonHeader, []byte(good)); err != nil {
		t.Errorf("a good answer is refused: %v", err)
	}
	bad := []struct {
		name   string
		req    *http.Request
		status int
		header http.Header
		body   string
	}{
		{"extra field", get("/healthz"), 200, jsonHeader, `{"code":200,"data":"ok","errors":{},"message":"ok","extra":1}`},
		{"missing field", get("/healthz"), 200, jsonHeader, `{"code":200,"data":"ok","message":"ok"}`},
		{"wrong type", get("/healthz"), 200, jsonHeader, `{"code":"200","data":"ok","errors":{},"message":"ok"}`},
		{"undocumented status", get("/healthz"), 404, jsonHeader, `{"code":404,"data":null,"errors":{},"message":"x"}`},
		{"undocumented route", get("/nope"), 200, jsonHeader, good},
		{"unknown path answered without the envelope", get("/nope"), 404, jsonHeader, `{"error":"not found"}`},
		{"undocumented method", httptest.NewRequest(http.MethodPatch, "/healthz", nil), 200, jsonHeader, good},
		{"missing trailing slash", get(api.BasePath + "/projects"), 200, jsonHeader, good},
		{"wrong content type", get("/healthz"), 200, http.Header{"Content-Type": {"text/html"}}, good},
		{"error with data", get(api.BasePath + "/projects/"), 401, jsonHeader, `{"code":401,"data":{},"errors":{},"message":"x"}`},
		{"error code differs from status", get(api.BasePath + "/projects/"), 401, jsonHeader, `{"code":400,"data":null,"errors":{},"message":"x"}`},
		{"list without total_count", get(api.BasePath + "/projects/"), 200, jsonHeader, `{"code":200,"data":[],"errors":{},"message":"Success","total_page_number":1}`},
		{"nullable field not nullable", get(api.BasePath + "/users/iam-accounts/"), 200, jsonHeader,
			`{"code":200,"data":[{"id":1,"account_id":1,"owner":null,"role":"owner","has_ai_labs_access":true,"has_tir_access":true}],"errors":{},"message":"Success"}`},
	}
	for _, c := range bad {
		if err := v.Validate(c.req, c.status, c.header, []byte(c.body)); err == nil {
			t.Errorf("%s: accepted", c.name)
		}
	}
	rec := &recorder{TB: t}
	v.Check(rec, get("/healthz"), 500, jsonHeader, []byte(`{}`))
	if len(rec.msgs) != 1 || !strings.Contains(rec.msgs[0], "GET /healthz answered 500") {
		t.Errorf("Check reported %q", rec.msgs)
	}
}

// ---- the real server ----

type env struct {
	Code            int                 `json:"code"`
	Data            json.RawMessage     `json:"data"`
	Errors          map[string][]string `json:"errors"`
	Message         string              `json:"message"`
	TotalCount      *int                `json:"total_count"`
	TotalPageNumber *int                `json:"total_page_number"`
}

type harness struct {
	t       *testing.T
	url     string
	hc      *http.Client
	apiKey  string
	token   string
	project int64
	backend *sim.Backend
	svc     *service.Service
}

// call sends a request; path is under api.BasePath unless it starts with "!" (then it is a root
// path); body is sent as is when []byte, else marshalled (nil: no body).
func (h *harness) call(method, path string, q url.Values, body any, auth bool, header map[string]string) (*http.Response, env) {
	h.t.Helper()
	if q == nil {
		q = url.Values{}
	}
	if auth {
		q.Set("apikey", h.apiKey)
	}
	full := h.url + api.BasePath + path
	if p, ok := strings.CutPrefix(path, "!"); ok {
		full = h.url + p
	}
	if len(q) > 0 {
		full += "?" + q.Encode()
	}
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			h.t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, full, rd)
	if err != nil {
		h.t.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if auth {
		req.Header.Set("Authorization", "Bearer "+h.token)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := h.hc.Do(req)
	if err != nil {
		h.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatal(err)
	}
	var e env
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") && path != "!/openapi.json" {
		if err := json.Unmarshal(raw, &e); err != nil {
			h.t.Fatalf("%s %s: answer is not an envelope: %v: %s", method, path, err, raw)
		}
	}
	return resp, e
}

// expect calls the API with credentials and checks the status.
func (h *harness) expect(want int, method, path string, q url.Values, body any) (*http.Response, env) {
	h.t.Helper()
	resp, e := h.call(method, path, q, body, true, nil)
	if resp.StatusCode != want {
		h.t.Fatalf("%s %s: status %d (%s %v), want %d", method, path, resp.StatusCode, e.Message, e.Errors, want)
	}
	return resp, e
}

func (h *harness) scope() url.Values {
	return url.Values{"project_id": {strconv.FormatInt(h.project, 10)}, "location": {"Delhi"}}
}

func (h *harness) with(q url.Values, kv ...string) url.Values {
	out := url.Values{}
	for k, v := range q {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		out.Set(kv[i], kv[i+1])
	}
	return out
}

func decode[T any](t *testing.T, raw json.RawMessage) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatalf("decoding %s: %v", raw, err)
	}
	return v
}

type idOnly struct {
	ID int64 `json:"id"`
}

type clusterView struct {
	ID            int64   `json:"id"`
	Status        string  `json:"status"`
	NoOfNodes     int     `json:"no_of_nodes"`
	CurrentAction *idOnly `json:"current_action"`
	LastAction    *struct {
		Status string `json:"status"`
	} `json:"last_action"`
	ReservedIP *idOnly `json:"reserved_ip"`
}

// settle waits until the cluster is Running and its newest action (network actions included)
// has ended.
func (h *harness) settle(id int64) clusterView {
	h.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, e := h.expect(200, http.MethodGet, fmt.Sprintf("/distributed_jobs_v2/cluster/%d/", id), h.scope(), nil)
		c := decode[clusterView](h.t, e.Data)
		if c.Status == "Running" && c.CurrentAction == nil && (c.LastAction == nil ||
			c.LastAction.Status != "queued" && c.LastAction.Status != "running") {
			return c
		}
		if c.Status == "Failed" || time.Now().After(deadline) {
			h.t.Fatalf("cluster %d did not settle: status %s, current action %v", id, c.Status, c.CurrentAction)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func newHarness(t *testing.T) *harness {
	db, err := store.OpenSQLite(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	cfg := config.Default()
	b, err := sim.New(sim.Options{OpLatency: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	rec := reconcile.New(db, b, cfg, nil, reconcile.Options{PollInterval: 5 * time.Millisecond, ResyncInterval: 20 * time.Millisecond})
	svc := &service.Service{DB: db, Config: cfg, Backend: b, Observer: rec, Wake: rec.Wake}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { rec.Run(ctx); close(done) }()
	ts := httptest.NewServer(api.New(svc, nil, api.Options{RateLimit: -1}).Handler())
	t.Cleanup(func() {
		ts.Close()
		cancel()
		<-done
	})
	creds, err := svc.Bootstrap(ctx, "a@example.com", "")
	if err != nil {
		t.Fatal(err)
	}
	v := New(t)
	return &harness{
		t: t, url: ts.URL, hc: &http.Client{Transport: v.Transport(t, nil), Timeout: 30 * time.Second},
		apiKey: creds.APIKey, token: creds.AuthToken, project: creds.ProjectID, backend: b, svc: svc,
	}
}

func newSSHKey(t *testing.T, comment string) string {
	pub, _, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	pk, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pk))) + " " + comment
}

func TestServerAnswersMatchDocument(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a cluster through every action")
	}
	h := newHarness(t)
	type M = map[string]any

	// Operations: public.
	for _, p := range []string{"!/healthz", "!/readyz", "!/openapi.json"} {
		resp, _ := h.call(http.MethodGet, p, nil, nil, false, nil)
		if resp.StatusCode != 200 {
			t.Errorf("GET %s: %d", p, resp.StatusCode)
		}
	}

	// Authentication.
	if resp, _ := h.call(http.MethodGet, "/distributed_jobs_v2/cluster/", h.scope(), nil, false, nil); resp.StatusCode != 401 {
		t.Errorf("no credentials: %d, want 401", resp.StatusCode)
	}
	h.expect(400, http.MethodGet, "/projects/", url.Values{"active_iam": {"x"}}, nil)
	h.expect(400, http.MethodGet, "/distributed_jobs_v2/cluster/", nil, nil)

	// Accounts and catalog.
	_, e := h.expect(200, http.MethodGet, "/users/iam-accounts/", nil, nil)
	if iams := decode[[]idOnly](t, e.Data); len(iams) != 1 {
		t.Errorf("iam accounts: %s", e.Data)
	}
	_, e = h.expect(200, http.MethodGet, "/projects/", url.Values{"per_page": {"5"}}, nil)
	if e.TotalCount == nil || *e.TotalCount != 1 {
		t.Errorf("projects total_count: %v", e.TotalCount)
	}
	h.expect(201, http.MethodPost, "/projects/", nil, M{"name": "research"})
	h.expect(400, http.MethodPost, "/projects/", nil, M{"name": "research"})
	h.expect(400, http.MethodPost, "/projects/", nil, M{"name": "bad name", "x": 1})
	h.expect(413, http.MethodPost, "/projects/", nil, []byte(`{"name":"`+strings.Repeat("a", api.MaxBodyBytes)+`"}`))
	h.expect(200, http.MethodGet, "/gpu_service/image/", nil, nil)
	h.expect(200, http.MethodGet, "/gpu_service/sku/", nil, nil)
	h.expect(200, http.MethodGet, "/gpu_service/sku/", url.Values{"service": {"distributed_job"}, "location": {"Delhi"}}, nil)
	h.expect(400, http.MethodGet, "/gpu_service/sku/", url.Values{"service": {"inference"}}, nil)

	// A viewer of the account may read but not change.
	g, err := h.svc.GrantIAM(context.Background(), "a@example.com", "v@example.com", "viewer")
	if err != nil || g.Credentials == nil {
		t.Fatalf("grant: %v", err)
	}
	viewer := *h
	viewer.apiKey, viewer.token = g.APIKey, g.AuthToken
	asOwner := url.Values{"active_iam": {strconv.FormatInt(g.IAMID, 10)}}
	_, e = viewer.expect(200, http.MethodGet, "/users/iam-accounts/", nil, nil)
	if iams := decode[[]idOnly](t, e.Data); len(iams) != 2 {
		t.Errorf("viewer's iam accounts: %s", e.Data)
	}
	viewer.expect(200, http.MethodGet, "/distributed_jobs_v2/cluster/", h.with(h.scope(), "active_iam", asOwner.Get("active_iam")), nil)
	viewer.expect(403, http.MethodPost, "/ssh_keys/", h.with(asOwner, "location", "Delhi"), map[string]any{"label": "x", "ssh_key": newSSHKey(t, "x")})
	viewer.expect(403, http.MethodPost, "/projects/", asOwner, map[string]any{"name": "nope"})
	viewer.expect(400, http.MethodGet, "/projects/", url.Values{"active_iam": {"999999"}}, nil)

	// SSH keys.
	loc := url.Values{"location": {"Delhi"}}
	_, e = h.expect(200, http.MethodPost, "/ssh_keys/", loc, M{"label": "laptop", "ssh_key": newSSHKey(t, "me@laptop")})
	key1 := decode[struct {
		PK int64 `json:"pk"`
	}](t, e.Data).PK
	_, e = h.expect(200, http.MethodPost, "/ssh_keys/", loc, M{"label": "ci", "ssh_key": newSSHKey(t, "ci")})
	key2 := decode[struct {
		PK int64 `json:"pk"`
	}](t, e.Data).PK
	h.expect(400, http.MethodPost, "/ssh_keys/", loc, M{"label": "bad", "ssh_key": "ssh-rsa nope"})
	h.expect(200, http.MethodGet, "/ssh_keys/", h.with(loc, "page_no", "1", "per_page", "1"), nil)

	// Security groups: ports go in as numbers or strings and come out as strings.
	_, e = h.expect(201, http.MethodPost, "/security_groups/", h.scope(), M{
		"name": "default-sg", "description": "ssh and web",
		"rules": []M{
			{"rule_type": "inbound", "protocol_type": "CustomTCP", "network_type": "any", "ports": []any{22, "8000-8100"}},
			{"rule_type": "inbound", "protocol_type": "CustomUDP", "network_type": "manual", "cidr_ip": "198.51.100.7", "ports": []any{"53"}},
			{"rule_type": "outbound", "protocol_type": "AllTraffic", "network_type": "any"},
		},
	})
	sg := decode[struct {
		ID    int64 `json:"id"`
		Rules []struct {
			Ports []string `json:"ports"`
		} `json:"rules"`
	}](t, e.Data)
	if len(sg.Rules) != 3 || strings.Join(sg.Rules[0].Ports, ",") != "22,8000-8100" {
		t.Errorf("rules: %s", e.Data)
	}
	_, e = h.expect(201, http.MethodPost, "/security_groups/", h.scope(), M{"name": "extra-sg"})
	sg2 := decode[idOnly](t, e.Data).ID
	h.expect(400, http.MethodPost, "/security_groups/", h.scope(), M{"name": "x", "rules": []M{{"rule_type": "sideways"}}})
	h.expect(200, http.MethodGet, fmt.Sprintf("/security_groups/%d/", sg.ID), h.scope(), nil)
	h.expect(404, http.MethodGet, "/security_groups/999999/", h.scope(), nil)
	h.expect(200, http.MethodPut, fmt.Sprintf("/security_groups/%d/rules/", sg2), h.scope(),
		[]M{{"rule_type": "inbound", "protocol_type": "CustomTCP", "network_type": "any", "ports": []any{443}}})
	h.expect(400, http.MethodPut, fmt.Sprintf("/security_groups/%d/rules/", sg2), h.scope(), M{"not": "an array"})
	h.expect(200, http.MethodGet, "/security_groups/", h.scope(), nil)

	// Create a cluster, idempotently.
	create := M{
		"name": "train-1", "image_version_id": 1, "ssh_key_ids": []int64{key1}, "security_group_id": sg.ID,
		"sku_id": 120, "no_of_nodes": 2, "sku_item_price_id": 1201,
		"script_added": true, "lifecycle_script": "#!/bin/sh\necho hi\n",
		"sfs_mount_list": []M{{"id": 1, "name": "shared", "mount_path": "/mnt/shared"}},
	}
	idem := map[string]string{"Idempotency-Key": "create-train-1"}
	resp, e := h.call(http.MethodPost, "/distributed_jobs_v2/cluster/", h.scope(), create, true, idem)
	if resp.StatusCode != 201 || resp.Header.Get("Trainyard-Action-Id") == "" {
		t.Fatalf("create: %d %s %v, action header %q", resp.StatusCode, e.Message, e.Errors, resp.Header.Get("Trainyard-Action-Id"))
	}
	cluster := decode[clusterView](t, e.Data)
	resp, _ = h.call(http.MethodPost, "/distributed_jobs_v2/cluster/", h.scope(), create, true, idem)
	if resp.StatusCode != 201 || resp.Header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("replay: %d, Idempotent-Replayed %q", resp.StatusCode, resp.Header.Get("Idempotent-Replayed"))
	}
	create["name"] = "train-2"
	if resp, _ = h.call(http.MethodPost, "/distributed_jobs_v2/cluster/", h.scope(), create, true, idem); resp.StatusCode != 422 {
		t.Errorf("key reuse: %d, want 422", resp.StatusCode)
	}
	h.expect(400, http.MethodPost, "/distributed_jobs_v2/cluster/", h.scope(), M{"name": "train-3"})

	cpath := fmt.Sprintf("/distributed_jobs_v2/cluster/%d/", cluster.ID)
	h.settle(cluster.ID)
	_, e = h.expect(200, http.MethodGet, "/distributed_jobs_v2/cluster/", h.scope(), nil)
	if e.TotalCount == nil || *e.TotalCount != 1 {
		t.Errorf("clusters total_count: %v", e.TotalCount)
	}
	h.expect(200, http.MethodGet, cpath+"nodes/", h.scope(), nil)
	h.expect(404, http.MethodGet, "/distributed_jobs_v2/cluster/999999/", h.scope(), nil)
	h.expect(400, http.MethodGet, "/distributed_jobs_v2/cluster/abc/", h.scope(), nil)

	// Cluster Actions: dry run, bad requests, then one of each.
	_, e = h.expect(200, http.MethodPut, cpath, h.with(h.scope(), "dry_run", "true"), M{"action": "restart_workers", "max_unavailable": 1})
	if dr := decode[struct {
		DryRun bool `json:"dry_run"`
	}](t, e.Data); !dr.DryRun {
		t.Errorf("dry run answered %s", e.Data)
	}
	h.expect(400, http.MethodPut, cpath, h.scope(), M{"action": "scale_cluster"})
	h.expect(400, http.MethodPut, cpath, h.scope(), M{"action": "explode"})
	h.expect(400, http.MethodPut, cpath, h.scope(), M{"action": "attach_ip", "reserved_ip_id": 1, "drain": "force"})
	h.expect(400, http.MethodPut, cpath, h.with(h.scope(), "dry_run", "maybe"), M{"action": "restart_workers"})
	h.expect(404, http.MethodPut, "/distributed_jobs_v2/cluster/999999/", h.scope(), M{"action": "restart_workers"})

	// An idempotent action: the retry gets the first answer and starts nothing.
	idem = map[string]string{"Idempotency-Key": "restart-1"}
	resp, _ = h.call(http.MethodPut, cpath, h.scope(), M{"action": "restart_workers"}, true, idem)
	if resp.StatusCode != 200 {
		t.Fatalf("idempotent restart: %d", resp.StatusCode)
	}
	h.settle(cluster.ID)
	resp, _ = h.call(http.MethodPut, cpath, h.scope(), M{"action": "restart_workers"}, true, idem)
	if resp.StatusCode != 200 || resp.Header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("idempotent replay: %d, Idempotent-Replayed %q", resp.StatusCode, resp.Header.Get("Idempotent-Replayed"))
	}
	if resp.Header.Get("Trainyard-Action-Id") == "" {
		t.Errorf("a replayed answer lacks the Trainyard-Action-Id header of the first one")
	}

	nodeActions := []M{
		{"action": "update_ssh_keys", "ssh_key_ids": []int64{key1, key2}},
		{"action": "update_image", "image_version_id": 2, "max_unavailable": "50%", "drain": "force"},
		{"action": "restart_workers", "max_unavailable": 1, "drain": "requeue"},
		{"action": "restart_cluster"},
		{"action": "scale_cluster", "additional_nodes": 1},
	}
	for _, body := range nodeActions {
		resp, e := h.expect(200, http.MethodPut, cpath, h.scope(), body)
		if resp.Header.Get("Trainyard-Action-Id") == "" {
			t.Errorf("%v: no Trainyard-Action-Id", body["action"])
		}
		if c := decode[clusterView](t, e.Data); c.ID != cluster.ID {
			t.Errorf("%v: answered %s", body["action"], e.Data)
		}
		h.settle(cluster.ID)
	}

	// Reserved IPs and the network actions.
	_, e = h.expect(200, http.MethodPost, "/reserved_ips/", h.scope(), nil)
	ip := decode[idOnly](t, e.Data).ID
	h.expect(200, http.MethodPost, "/reserved_ips/", h.scope(), M{})
	h.expect(400, http.MethodPost, "/reserved_ips/", h.scope(), M{"ip": "1.2.3.4"})
	_, e = h.expect(200, http.MethodGet, "/reserved_ips/", h.scope(), nil)
	if e.TotalCount == nil || *e.TotalCount != 2 {
		t.Errorf("reserved ips total_count: %v", e.TotalCount)
	}
	_, e = h.expect(200, http.MethodPut, cpath, h.scope(), M{"action": "attach_ip", "reserved_ip_id": ip})
	if got := decode[struct {
		Status string `json:"status"`
	}](t, e.Data); got.Status != "Attached" {
		t.Errorf("attach_ip answered %s", e.Data)
	}
	if c := h.settle(cluster.ID); c.ReservedIP == nil || c.ReservedIP.ID != ip {
		t.Errorf("cluster reserved_ip: %v", c.ReservedIP)
	}
	h.expect(200, http.MethodGet, "/reserved_ips/", h.scope(), nil)
	h.expect(409, http.MethodDelete, fmt.Sprintf("/reserved_ips/%d/", ip), h.scope(), nil)
	_, e = h.expect(200, http.MethodPut, cpath, h.scope(), M{"action": "detach_ip", "reserved_ip_id": ip, "ip_type": "reserved"})
	if string(e.Data) != "{}" {
		t.Errorf("detach_ip answered %s", e.Data)
	}
	// The address stays attached until the controller has let go of it.
	h.settle(cluster.ID)
	h.expect(200, http.MethodDelete, fmt.Sprintf("/reserved_ips/%d/", ip), h.scope(), nil)
	h.expect(404, http.MethodDelete, fmt.Sprintf("/reserved_ips/%d/", ip), h.scope(), nil)

	_, e = h.expect(200, http.MethodPut, cpath, h.scope(), M{"action": "add_security_group", "security_groups_ids": []int64{sg2}})
	if decode[string](t, e.Data) == "" {
		t.Errorf("add_security_group answered %s", e.Data)
	}
	h.expect(409, http.MethodDelete, fmt.Sprintf("/security_groups/%d/", sg2), h.scope(), nil)
	_, e = h.expect(200, http.MethodPut, cpath, h.scope(), M{"action": "remove_security_group", "security_group_id": sg2})
	if decode[string](t, e.Data) == "" {
		t.Errorf("remove_security_group answered %s", e.Data)
	}
	h.settle(cluster.ID)
	h.expect(200, http.MethodDelete, fmt.Sprintf("/security_groups/%d/", sg2), h.scope(), nil)

	// A busy cluster: a job on every worker keeps a rolling restart (drain wait) from finishing.
	c := h.settle(cluster.ID)
	job, err := h.backend.SubmitJob(cluster.ID, c.NoOfNodes, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if js := h.backend.Jobs(cluster.ID); len(js) != 1 || js[0].State != sim.JobRunning {
		t.Fatalf("job did not start: %+v", js)
	}
	resp, _ = h.expect(200, http.MethodPut, cpath, h.scope(), M{"action": "restart_workers", "drain": "wait"})
	busyAction := resp.Header.Get("Trainyard-Action-Id")
	_, e = h.expect(409, http.MethodPut, cpath, h.scope(), M{"action": "restart_cluster"})
	if len(e.Errors["current_action_id"]) != 1 || e.Errors["current_action_id"][0] != busyAction {
		t.Errorf("409 errors: %v, want current_action_id %s", e.Errors, busyAction)
	}
	h.expect(409, http.MethodPut, cpath, h.with(h.scope(), "dry_run", "true"), M{"action": "update_image", "image_version_id": 1})
	h.expect(409, http.MethodDelete, cpath, h.scope(), nil)
	h.expect(200, http.MethodGet, cpath+"nodes/", h.scope(), nil)
	apath := cpath + "actions/" + busyAction + "/"
	_, e = h.expect(200, http.MethodPost, apath+"cancel/", h.scope(), nil)
	if a := decode[struct {
		CancelRequested bool `json:"cancel_requested"`
	}](t, e.Data); !a.CancelRequested {
		t.Errorf("cancel answered %s", e.Data)
	}
	h.settle(cluster.ID)
	_, e = h.expect(200, http.MethodGet, apath, h.scope(), nil)
	if a := decode[struct {
		Status string `json:"status"`
	}](t, e.Data); a.Status != "canceled" {
		t.Errorf("canceled action: %s", e.Data)
	}
	h.expect(409, http.MethodPost, apath+"cancel/", h.scope(), nil)
	if err := h.backend.CancelJob(cluster.ID, job); err != nil {
		t.Fatal(err)
	}

	// History.
	_, e = h.expect(200, http.MethodGet, cpath+"actions/", h.with(h.scope(), "per_page", "3"), nil)
	if e.TotalCount == nil || *e.TotalCount < 10 || e.TotalPageNumber == nil || *e.TotalPageNumber < 4 {
		t.Errorf("actions total_count %v, total_page_number %v", e.TotalCount, e.TotalPageNumber)
	}
	h.expect(200, http.MethodGet, cpath+"actions/", h.scope(), nil)
	h.expect(404, http.MethodGet, cpath+"actions/999999/", h.scope(), nil)
	h.expect(400, http.MethodGet, cpath+"actions/", h.with(h.scope(), "per_page", "1000"), nil)

	// Keys leave the library, not the cluster.
	h.expect(200, http.MethodDelete, fmt.Sprintf("/ssh_keys/%d/", key2), loc, nil)
	h.expect(404, http.MethodDelete, fmt.Sprintf("/ssh_keys/%d/", key2), loc, nil)

	// Delete the cluster; its history stays.
	resp, _ = h.expect(200, http.MethodDelete, cpath, h.scope(), nil)
	if resp.Header.Get("Trainyard-Action-Id") == "" {
		t.Errorf("delete: no Trainyard-Action-Id")
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, _ := h.call(http.MethodGet, cpath, h.scope(), nil, true, nil)
		if resp.StatusCode == 404 {
			break
		}
		if resp.StatusCode != 200 || time.Now().After(deadline) {
			t.Fatalf("deleting cluster: GET answered %d", resp.StatusCode)
		}
		time.Sleep(20 * time.Millisecond)
	}
	h.expect(200, http.MethodGet, cpath+"actions/", h.scope(), nil)
	// A group that was applied to a since-deleted cluster is free to delete.
	h.expect(200, http.MethodDelete, fmt.Sprintf("/security_groups/%d/", sg.ID), h.scope(), nil)

	resp, _ = h.call(http.MethodGet, "!/metrics", nil, nil, false, nil)
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Errorf("metrics: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
}
