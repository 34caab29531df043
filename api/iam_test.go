package api_test

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/trainyard/trainyard/internal/testenv"
	"github.com/trainyard/trainyard/store"
)

// Accounts, IAM and isolation: nothing of one account is visible to another.

func TestAccountsAreIsolated(t *testing.T) {
	e := newEnv(t)
	mine := e.NewCluster(e.Owner, "mine", 1)
	myKey := mine.SSHKeys[0].PK
	myGroup := mine.SecurityGroups[0].ID
	var myIP struct {
		ID int64 `json:"id"`
	}
	e.Must(http.StatusOK, e.Owner, "POST", "/reserved_ips/", nil, nil).Into(t, &myIP)

	r, err := e.Svc.Bootstrap(t.Context(), "stranger@example.com", "")
	if err != nil {
		t.Fatal(err)
	}
	other := testenv.Creds{APIKey: r.APIKey, AuthToken: r.AuthToken, ProjectID: r.ProjectID, Location: "Delhi"}
	theirs := e.NewCluster(other, "theirs", 1)

	// The stranger's own project id is what they must use; ours is not theirs.
	withMyProject := other
	withMyProject.ProjectID = e.Owner.ProjectID
	e.Must(http.StatusBadRequest, withMyProject, "GET", "/distributed_jobs_v2/cluster/", nil, nil)

	// Our cluster does not exist for them: 404 on every verb.
	e.Must(http.StatusNotFound, other, "GET", testenv.ClusterPath(mine.ID), nil, nil)
	e.Must(http.StatusNotFound, other, "PUT", testenv.ClusterPath(mine.ID), nil, map[string]any{"action": "restart_workers"})
	e.Must(http.StatusNotFound, other, "DELETE", testenv.ClusterPath(mine.ID), nil, nil)
	e.Must(http.StatusNotFound, other, "GET", testenv.ClusterPath(mine.ID)+"actions/", nil, nil)
	e.Must(http.StatusNotFound, other, "GET", fmt.Sprintf("%sactions/1/", testenv.ClusterPath(mine.ID)), nil, nil)
	e.Must(http.StatusNotFound, other, "GET", testenv.ClusterPath(mine.ID)+"nodes/", nil, nil)
	e.Must(http.StatusNotFound, other, "GET", fmt.Sprintf("/security_groups/%d/", myGroup), nil, nil)
	e.Must(http.StatusNotFound, other, "DELETE", fmt.Sprintf("/ssh_keys/%d/", myKey), nil, nil)
	e.Must(http.StatusNotFound, other, "DELETE", fmt.Sprintf("/reserved_ips/%d/", myIP.ID), nil, nil)

	// Our ids used as references in their actions are unknown ids.
	for _, body := range []map[string]any{
		{"action": "update_ssh_keys", "ssh_key_ids": []int64{myKey}},
		{"action": "add_security_group", "security_groups_ids": []int64{myGroup}},
		{"action": "attach_ip", "reserved_ip_id": myIP.ID},
	} {
		if r := e.Act(other, theirs.ID, body); r.Status != http.StatusBadRequest {
			t.Errorf("%v with our ids: %d %s", body, r.Status, r.Raw)
		}
	}
	keyID, _ := e.AddKey(other, "k")
	b := testenv.ClusterBody("x", 1, keyID, myGroup)
	if r := e.Call(other, "POST", "/distributed_jobs_v2/cluster/", nil, b); r.Status != http.StatusBadRequest || len(r.Errors["security_group_id"]) == 0 {
		t.Errorf("create with our group: %d %s", r.Status, r.Raw)
	}
	// Lists show only one's own.
	var list []testenv.Cluster
	e.Must(http.StatusOK, other, "GET", "/distributed_jobs_v2/cluster/", nil, nil).Into(t, &list)
	if len(list) != 1 || list[0].ID != theirs.ID {
		t.Errorf("their list: %+v", list)
	}
	var keys []any
	e.Must(http.StatusOK, other, "GET", "/ssh_keys/", nil, nil).Into(t, &keys)
	if len(keys) != 2 {
		t.Errorf("they see %d keys, want their 2", len(keys))
	}
}

func TestIAMRolesAndActiveIAM(t *testing.T) {
	e := newEnv(t)
	c := e.NewCluster(e.Owner, "shared", 1)
	member, err := e.Svc.GrantIAM(t.Context(), "owner@example.com", "member@example.com", "member")
	if err != nil {
		t.Fatal(err)
	}
	viewer, err := e.Svc.GrantIAM(t.Context(), "owner@example.com", "viewer@example.com", "viewer")
	if err != nil {
		t.Fatal(err)
	}
	if member.Credentials == nil || viewer.Credentials == nil {
		t.Fatal("new users got no keys")
	}
	asMember := testenv.Creds{APIKey: member.APIKey, AuthToken: member.AuthToken, ProjectID: e.Owner.ProjectID, Location: "Delhi", IAM: member.IAMID}
	asViewer := testenv.Creds{APIKey: viewer.APIKey, AuthToken: viewer.AuthToken, ProjectID: e.Owner.ProjectID, Location: "Delhi", IAM: viewer.IAMID}

	var accounts []struct {
		ID    int64  `json:"id"`
		Role  string `json:"role"`
		Owner struct {
			Email string `json:"email"`
		} `json:"owner"`
	}
	e.Must(http.StatusOK, asMember, "GET", "/users/iam-accounts/", nil, nil).Into(t, &accounts)
	if len(accounts) != 2 || accounts[0].Role != "owner" || accounts[1].ID != member.IAMID || accounts[1].Owner.Email != "owner@example.com" {
		t.Errorf("member's iam accounts: %+v", accounts)
	}

	// The member acts in the owner's account through active_iam; the action records who.
	a := e.ActOK(asMember, c.ID, map[string]any{"action": "restart_workers"})
	if a.Status != "succeeded" || a.RequestedBy.ID != member.UserID || a.ActiveIAM != member.IAMID {
		t.Errorf("member's action: %+v", a)
	}
	// Without active_iam the member acts in their own account, where the cluster is not.
	noIAM := asMember
	noIAM.IAM = 0
	e.Must(http.StatusBadRequest, noIAM, "GET", testenv.ClusterPath(c.ID), nil, nil) // the owner's project is not theirs

	// The viewer reads but may not change anything.
	e.Must(http.StatusOK, asViewer, "GET", testenv.ClusterPath(c.ID), nil, nil)
	e.Must(http.StatusForbidden, asViewer, "PUT", testenv.ClusterPath(c.ID), nil, map[string]any{"action": "restart_workers"})
	e.Must(http.StatusForbidden, asViewer, "DELETE", testenv.ClusterPath(c.ID), nil, nil)
	e.Must(http.StatusForbidden, asViewer, "POST", "/ssh_keys/", nil, map[string]any{"label": "v", "ssh_key": testenv.NewPublicKey("v")})
	e.Must(http.StatusForbidden, asViewer, "POST", "/reserved_ips/", nil, nil)
	e.Must(http.StatusForbidden, asViewer, "POST", "/projects/", nil, map[string]any{"name": "p2"})
	e.Must(http.StatusForbidden, asMember, "POST", "/projects/", nil, map[string]any{"name": "p2"})

	// Someone else's IAM entry is not the caller's to use.
	stolen := asViewer
	stolen.IAM = member.IAMID
	r := e.Call(stolen, "GET", "/distributed_jobs_v2/cluster/", nil, nil)
	if r.Status != http.StatusBadRequest || len(r.Errors["active_iam"]) == 0 {
		t.Errorf("using another user's active_iam: %d %s", r.Status, r.Raw)
	}
	// Regranting changes the role.
	if _, err := e.Svc.GrantIAM(t.Context(), "owner@example.com", "viewer@example.com", "member"); err != nil {
		t.Fatal(err)
	}
	e.Must(http.StatusOK, asViewer, "PUT", testenv.ClusterPath(c.ID), nil, map[string]any{"action": "update_ssh_keys", "ssh_key_ids": []int64{c.SSHKeys[0].PK}})
}

func TestProjectsAndCatalog(t *testing.T) {
	e := newEnv(t)
	var p struct {
		ID int64 `json:"id"`
	}
	e.Must(http.StatusCreated, e.Owner, "POST", "/projects/", nil, map[string]any{"name": "research"}).Into(t, &p)
	e.Must(http.StatusBadRequest, e.Owner, "POST", "/projects/", nil, map[string]any{"name": "research"})
	r := e.Must(http.StatusOK, e.Owner, "GET", "/projects/", nil, nil)
	if r.TotalCount == nil || *r.TotalCount != 2 {
		t.Errorf("projects: %s", r.Raw)
	}
	// Clusters are per project.
	inP := e.Owner
	inP.ProjectID = p.ID
	c := e.NewCluster(inP, "in-research", 1)
	e.Must(http.StatusNotFound, e.Owner, "GET", testenv.ClusterPath(c.ID), nil, nil)

	var images []struct {
		Name     string `json:"name"`
		Versions []struct {
			ImageVersionID int64 `json:"image_version_id"`
		} `json:"versions"`
	}
	e.Must(http.StatusOK, e.Owner, "GET", "/gpu_service/image/", nil, nil).Into(t, &images)
	if len(images) == 0 || images[0].Name != "Ubuntu Slurm" || len(images[0].Versions) < 2 {
		t.Errorf("images: %+v", images)
	}
	var skus map[string][]struct {
		SKUID int64 `json:"sku_id"`
		Plans []struct {
			SKUItemPriceID int64  `json:"sku_item_price_id"`
			Location       string `json:"location"`
		} `json:"plans"`
	}
	e.Must(http.StatusOK, e.Owner, "GET", "/gpu_service/sku/", map[string][]string{"service": {"distributed_job"}}, nil).Into(t, &skus)
	if len(skus["GPU"]) == 0 || len(skus["GPU"][0].Plans) != 1 || skus["GPU"][0].Plans[0].Location != "Delhi" {
		t.Errorf("skus for Delhi: %+v", skus)
	}
	e.Must(http.StatusBadRequest, e.Owner, "GET", "/gpu_service/sku/", map[string][]string{"service": {"inference"}}, nil)
}

func TestListPagination(t *testing.T) {
	e := newEnv(t)
	for i := range 5 {
		e.AddKey(e.Owner, fmt.Sprintf("k%d", i))
	}
	r := e.Must(http.StatusOK, e.Owner, "GET", "/ssh_keys/", map[string][]string{"per_page": {"2"}, "page_no": {"3"}}, nil)
	var keys []struct {
		Label string `json:"label"`
	}
	r.Into(t, &keys)
	if *r.TotalCount != 5 || *r.TotalPageNumber != 3 || len(keys) != 1 || keys[0].Label != "k4" {
		t.Errorf("page 3 of 2: total %d pages %d keys %+v", *r.TotalCount, *r.TotalPageNumber, keys)
	}
}

func TestRevokedKeyStopsWorkingAtOnce(t *testing.T) {
	e := newEnv(t)
	e.Must(http.StatusOK, e.Owner, "GET", "/distributed_jobs_v2/cluster/", nil, nil)
	if err := e.Svc.RevokeKey(t.Context(), e.Owner.APIKey); err != nil {
		t.Fatal(err)
	}
	e.Must(http.StatusUnauthorized, e.Owner, "GET", "/distributed_jobs_v2/cluster/", nil, nil)
	if err := e.Svc.RevokeKey(t.Context(), e.Owner.APIKey); err == nil {
		t.Error("revoking a revoked key succeeded")
	}
	// The user's other pairs keep working until they too are revoked.
	again, err := e.Svc.Bootstrap(t.Context(), "owner@example.com", "")
	if err != nil {
		t.Fatal(err)
	}
	c := testenv.Creds{APIKey: again.APIKey, AuthToken: again.AuthToken, ProjectID: again.ProjectID, Location: "Delhi"}
	e.Must(http.StatusOK, c, "GET", "/distributed_jobs_v2/cluster/", nil, nil)
	if err := e.Svc.RevokeUserKeys(t.Context(), "owner@example.com"); err != nil {
		t.Fatal(err)
	}
	e.Must(http.StatusUnauthorized, c, "GET", "/distributed_jobs_v2/cluster/", nil, nil)
}

func TestAuditLogRecordsEveryMutatingCall(t *testing.T) {
	e := newEnv(t)
	c := e.NewCluster(e.Owner, "audited", 1)
	member, err := e.Svc.GrantIAM(t.Context(), "owner@example.com", "m@example.com", "member")
	if err != nil {
		t.Fatal(err)
	}
	asMember := testenv.Creds{APIKey: member.APIKey, AuthToken: member.AuthToken, ProjectID: e.Owner.ProjectID, Location: "Delhi", IAM: member.IAMID}
	e.Must(http.StatusOK, asMember, "PUT", testenv.ClusterPath(c.ID), nil, map[string]any{"action": "restart_workers"})
	e.Must(http.StatusBadRequest, asMember, "PUT", testenv.ClusterPath(c.ID), nil, map[string]any{"action": "nonsense"})
	e.Must(http.StatusForbidden, asMember, "GET", "/audit_log/", nil, nil)
	var entries []struct {
		UserEmail string `json:"user_email"`
		ActiveIAM int64  `json:"active_iam"`
		Method    string `json:"method"`
		Operation string `json:"operation"`
		Status    int    `json:"status"`
	}
	e.Must(http.StatusOK, e.Owner, "GET", "/audit_log/", map[string][]string{"per_page": {"100"}}, nil).Into(t, &entries)
	if len(entries) < 5 {
		t.Fatalf("%d audit entries: %+v", len(entries), entries)
	}
	if got := entries[0]; got.UserEmail != "m@example.com" || got.ActiveIAM != member.IAMID || got.Status != 400 || got.Operation != "PUT /distributed_jobs_v2/cluster/{id}/{$} nonsense" {
		t.Errorf("newest entry: %+v", got)
	}
	if got := entries[1]; got.Status != 200 || got.Operation != "PUT /distributed_jobs_v2/cluster/{id}/{$} restart_workers" {
		t.Errorf("second entry: %+v", got)
	}
	for _, en := range entries {
		if en.Method == "GET" {
			t.Errorf("a GET was audited: %+v", en)
		}
	}
	// Another account sees none of it.
	r, err := e.Svc.Bootstrap(t.Context(), "other@example.com", "")
	if err != nil {
		t.Fatal(err)
	}
	other := testenv.Creds{APIKey: r.APIKey, AuthToken: r.AuthToken}
	var theirs []any
	e.Must(http.StatusOK, other, "GET", "/audit_log/", nil, nil).Into(t, &theirs)
	if len(theirs) != 0 {
		t.Errorf("another account sees %d entries", len(theirs))
	}
}

func TestRateLimitAnswers429PerKey(t *testing.T) {
	e := testenv.New(t, testenv.Options{RateLimit: 1})
	limited := 0
	for range 60 {
		r := e.Call(e.Owner, "GET", "/gpu_service/image/", nil, nil)
		if r.Status == http.StatusTooManyRequests {
			limited++
			if r.Header.Get("Retry-After") == "" || r.Message == "" {
				t.Errorf("429 without Retry-After or message: %s", r.Raw)
			}
		}
	}
	if limited == 0 {
		t.Fatal("60 requests at once on a limit of 1/s (burst 40) were never refused")
	}
	// Mutating calls are audited even when the limit refuses them.
	refusedPosts := 0
	for i := range 5 {
		if r := e.Call(e.Owner, "POST", "/projects/", nil, map[string]any{"name": fmt.Sprintf("p%d", i)}); r.Status == http.StatusTooManyRequests {
			refusedPosts++
		}
	}
	if refusedPosts == 0 {
		t.Fatal("no POST was refused")
	}
	audited := 0
	for _, en := range auditEntries(t, e) {
		if en.Status == http.StatusTooManyRequests && en.Method == "POST" {
			audited++
		}
	}
	if audited != refusedPosts {
		t.Errorf("%d refused POSTs, %d in the audit log", refusedPosts, audited)
	}
	// Another key pair has its own budget.
	r, err := e.Svc.Bootstrap(t.Context(), "second@example.com", "")
	if err != nil {
		t.Fatal(err)
	}
	e.Must(http.StatusOK, testenv.Creds{APIKey: r.APIKey, AuthToken: r.AuthToken}, "GET", "/gpu_service/image/", nil, nil)
}

func TestSecretsAreStoredHashed(t *testing.T) {
	e := newEnv(t)
	if e.DB.Postgres() {
		t.Skip("checked on SQLite, whose files the test can read; the hashing is the same code")
	}
	e.Must(http.StatusOK, e.Owner, "GET", "/projects/", nil, nil)
	files, _ := filepath.Glob(filepath.Join(e.Dir, "trainyard.db*"))
	if len(files) == 0 {
		t.Fatal("no database files to check")
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for name, secret := range map[string]string{"api key": e.Owner.APIKey, "auth token": e.Owner.AuthToken} {
			if bytes.Contains(b, []byte(secret)) || bytes.Contains(b, []byte(strings.TrimPrefix(secret, "tyk_"))) || bytes.Contains(b, []byte(strings.TrimPrefix(secret, "tyt_"))) {
				t.Errorf("%s stores the %s in clear", f, name)
			}
		}
	}
}

type auditEntry struct {
	Method string `json:"method"`
	Status int    `json:"status"`
}

// auditEntries reads the owner's audit log straight from the store (the API itself may be rate
// limited in the test that calls this).
func auditEntries(t *testing.T, e *testenv.Env) []auditEntry {
	t.Helper()
	c, err := e.Svc.Authenticate(t.Context(), e.Owner.APIKey, e.Owner.AuthToken, 0)
	if err != nil {
		t.Fatal(err)
	}
	entries, _, err := e.Svc.AuditLog(t.Context(), c, store.Page{No: 1, PerPage: 1000})
	if err != nil {
		t.Fatal(err)
	}
	var out []auditEntry
	for _, en := range entries {
		out = append(out, auditEntry{Method: en.Method, Status: en.Status})
	}
	return out
}
