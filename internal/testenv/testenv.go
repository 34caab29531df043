// Package testenv builds a whole trainyard (SQLite store in a temporary directory, sim backend,
// reconciler, HTTP server) inside a test, and talks to it the way a client of the hosted API
// would. Every response that passes through Env's client is checked against the OpenAPI
// document (api/openapi.json).
package testenv

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/trainyard/trainyard"
	"github.com/trainyard/trainyard/api"
	"github.com/trainyard/trainyard/api/openapitest"
	"github.com/trainyard/trainyard/backend/sim"
	"github.com/trainyard/trainyard/config"
	"github.com/trainyard/trainyard/internal/pgtest"
	"github.com/trainyard/trainyard/reconcile"
	"github.com/trainyard/trainyard/service"
	"github.com/trainyard/trainyard/store"
)

// Options tune an Env.
type Options struct {
	OpLatency time.Duration     // sim operation latency (default 2ms)
	Reconcile reconcile.Options // defaults suited to tests when zero
	Config    *config.Config    // default: config.Default()
	NoRun     bool              // do not start the reconciler
	NoOpenAPI bool              // do not check answers against the OpenAPI document
	Backend   trainyard.Backend // default: a sim backend (then Env.Sim is set)
	DataDir   string            // the store's directory (default: a new temporary one); reuse it to restart
	RateLimit float64           // requests a second per key (default: no limit)
}

// Env is a running trainyard.
type Env struct {
	T      testing.TB
	Dir    string
	DB     *store.DB
	Sim    *sim.Backend // nil when Options.Backend was given
	Rec    *reconcile.Reconciler
	Svc    *service.Service
	Cfg    *config.Config
	Server *httptest.Server
	Client *http.Client
	Owner  Creds

	cancel context.CancelFunc
	done   chan struct{}
}

// Creds are what a client needs to call the API.
type Creds struct {
	APIKey    string
	AuthToken string
	ProjectID int64
	IAM       int64 // active_iam to send, 0 for none
	Location  string
}

// New starts a trainyard and bootstraps owner@example.com.
func New(t testing.TB, opts Options) *Env {
	t.Helper()
	if opts.OpLatency == 0 {
		opts.OpLatency = 2 * time.Millisecond
	}
	ro := opts.Reconcile
	if ro.PollInterval == 0 {
		ro.PollInterval = 2 * time.Millisecond
	}
	if ro.ResyncInterval == 0 {
		ro.ResyncInterval = 50 * time.Millisecond
	}
	if ro.BootTimeout == 0 {
		ro.BootTimeout = 10 * time.Second
	}
	if ro.BlockedTimeout == 0 {
		ro.BlockedTimeout = 10 * time.Second
	}
	if opts.RateLimit == 0 {
		opts.RateLimit = -1
	}
	cfg := opts.Config
	if cfg == nil {
		cfg = config.Default()
	}
	dir := opts.DataDir
	if dir == "" {
		dir = t.TempDir()
	}
	// TRAINYARD_TEST_STORE=postgres runs the same tests on PostgreSQL (scripts/test does both).
	dsn := dir
	if os.Getenv("TRAINYARD_TEST_STORE") == "postgres" && opts.DataDir == "" {
		dsn = pgtest.URL(t)
	}
	db, err := store.Open(dsn)
	if err != nil {
		t.Fatal(err)
	}
	var b trainyard.Backend = opts.Backend
	var simb *sim.Backend
	if b == nil {
		if simb, err = sim.New(sim.Options{OpLatency: opts.OpLatency}); err != nil {
			t.Fatal(err)
		}
		b = simb
	}
	e := &Env{T: t, Dir: dir, DB: db, Sim: simb, Cfg: cfg, done: make(chan struct{})}
	e.Rec = reconcile.New(db, b, cfg, nil, ro)
	e.Svc = &service.Service{DB: db, Config: cfg, Backend: b, Observer: e.Rec, Wake: e.Rec.Wake}
	e.Server = httptest.NewServer(api.New(e.Svc, nil, api.Options{RateLimit: opts.RateLimit}).Handler())
	transport := http.DefaultTransport
	if !opts.NoOpenAPI {
		transport = openapitest.New(t).Transport(t, transport)
	}
	e.Client = &http.Client{Transport: transport, Timeout: 30 * time.Second}
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	if opts.NoRun {
		close(e.done)
	} else {
		go func() { e.Rec.Run(ctx); close(e.done) }()
	}
	t.Cleanup(e.Close)
	r, err := e.Svc.Bootstrap(ctx, "owner@example.com", "Owner")
	if err != nil {
		t.Fatal(err)
	}
	e.Owner = Creds{APIKey: r.APIKey, AuthToken: r.AuthToken, ProjectID: r.ProjectID, Location: "Delhi"}
	return e
}

// Close stops the reconciler and the server.
func (e *Env) Close() {
	e.cancel()
	<-e.done
	e.Server.Close()
	e.DB.Close()
}

// Response is a decoded API answer.
type Response struct {
	Status          int
	Code            int                 `json:"code"`
	Data            json.RawMessage     `json:"data"`
	Errors          map[string][]string `json:"errors"`
	Message         string              `json:"message"`
	TotalCount      *int                `json:"total_count"`
	TotalPageNumber *int                `json:"total_page_number"`
	Header          http.Header
	Raw             []byte
}

// ActionID is the action an answer started (its Trainyard-Action-Id header), 0 when none.
func (r Response) ActionID() int64 {
	id, _ := strconv.ParseInt(r.Header.Get("Trainyard-Action-Id"), 10, 64)
	return id
}

// Into decodes data into v, failing the test on error.
func (r Response) Into(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Data, v); err != nil {
		t.Fatalf("decoding data %s: %v", r.Data, err)
	}
}

// Call sends a request with creds; path is relative to the API base path; query adds to the
// scope parameters creds imply (project_id, location, active_iam). body is JSON-encoded unless
// it is a string or []byte.
func (e *Env) Call(c Creds, method, path string, query url.Values, body any, header ...string) Response {
	e.T.Helper()
	q := url.Values{}
	if c.APIKey != "" {
		q.Set("apikey", c.APIKey)
	}
	if c.ProjectID != 0 {
		q.Set("project_id", fmt.Sprint(c.ProjectID))
	}
	if c.Location != "" {
		q.Set("location", c.Location)
	}
	if c.IAM != 0 {
		q.Set("active_iam", fmt.Sprint(c.IAM))
	}
	for k, vs := range query {
		q.Del(k)
		for _, v := range vs {
			if v != "" {
				q.Add(k, v)
			}
		}
	}
	rd, err := Body(body)
	if err != nil {
		e.T.Fatal(err)
	}
	u := e.Server.URL
	if !strings.HasPrefix(path, "/healthz") && !strings.HasPrefix(path, "/readyz") && !strings.HasPrefix(path, "/metrics") {
		u += api.BasePath
	}
	req, err := http.NewRequest(method, u+path+"?"+q.Encode(), rd)
	if err != nil {
		e.T.Fatal(err)
	}
	if c.AuthToken != "" {
		req.Header.Set("Authorization", "Bearer "+c.AuthToken)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := e.Client.Do(req)
	if err != nil {
		e.T.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		e.T.Fatal(err)
	}
	out := Response{Status: resp.StatusCode, Header: resp.Header, Raw: raw}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(raw, &out); err != nil {
			e.T.Fatalf("%s %s: answer is not the JSON envelope: %v: %s", method, path, err, raw)
		}
		if out.Code != resp.StatusCode {
			e.T.Errorf("%s %s: envelope code %d differs from HTTP status %d", method, path, out.Code, resp.StatusCode)
		}
	}
	return out
}

// Body is a request body: nil for none, a string or []byte as it is, anything else as JSON.
func Body(body any) (io.Reader, error) {
	switch b := body.(type) {
	case nil:
		return nil, nil
	case string:
		return strings.NewReader(b), nil
	case []byte:
		return bytes.NewReader(b), nil
	}
	j, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	return bytes.NewReader(j), nil
}

// Must is Call that fails the test unless the answer has status want.
func (e *Env) Must(want int, c Creds, method, path string, query url.Values, body any, header ...string) Response {
	e.T.Helper()
	r := e.Call(c, method, path, query, body, header...)
	if r.Status != want {
		e.T.Fatalf("%s %s: status %d, want %d: %s", method, path, r.Status, want, r.Raw)
	}
	return r
}

// Eventually polls cond every 10ms until it holds or timeout passes.
func (e *Env) Eventually(timeout time.Duration, what string, cond func() bool) {
	e.T.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			e.T.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
