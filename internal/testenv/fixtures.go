package testenv

import (
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"net/http"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
)

// Cluster is the part of the cluster object tests read.
type Cluster struct {
	ID           int64  `json:"id"`
	Name         string `json:"name"`
	Status       string `json:"status"`
	NoOfNodes    int    `json:"no_of_nodes"`
	ImageVersion struct {
		ID      int64  `json:"id"`
		Version string `json:"version"`
	} `json:"image_version"`
	SSHKeys []struct {
		PK     int64  `json:"pk"`
		SSHKey string `json:"ssh_key"`
	} `json:"ssh_keys"`
	SecurityGroups []struct {
		ID int64 `json:"id"`
	} `json:"security_groups"`
	ReservedIP *struct {
		ID        int64  `json:"id"`
		IPAddress string `json:"ip_address"`
	} `json:"reserved_ip"`
	CurrentAction *ActionRef `json:"current_action"`
	LastAction    *ActionRef `json:"last_action"`
}

// ActionRef is the short form of an action in a cluster object.
type ActionRef struct {
	ID     int64  `json:"id"`
	Type   string `json:"type"`
	Status string `json:"status"`
}

// Action is an action as the API shows it.
type Action struct {
	ID       int64  `json:"id"`
	Type     string `json:"type"`
	Status   string `json:"status"`
	Error    string `json:"error"`
	Progress struct {
		Total  int `json:"total"`
		Done   int `json:"done"`
		Failed int `json:"failed"`
	} `json:"progress"`
	Plan struct {
		MaxUnavailable int        `json:"max_unavailable"`
		Drain          string     `json:"drain"`
		Batches        [][]string `json:"batches"`
	} `json:"plan"`
	Steps []struct {
		Node   string `json:"node"`
		Status string `json:"status"`
		Error  string `json:"error"`
	} `json:"steps"`
	Events []struct {
		Node    string `json:"node"`
		Message string `json:"message"`
	} `json:"events"`
	RequestedBy struct {
		ID int64 `json:"id"`
	} `json:"requested_by"`
	ActiveIAM int64 `json:"active_iam"`
}

// NewPublicKey returns a fresh ed25519 public key in authorized_keys form.
func NewPublicKey(comment string) string {
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		panic(err)
	}
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		panic(err)
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sp))) + " " + comment
}

// AddKey adds a new key to c's account and returns its id and public key.
func (e *Env) AddKey(c Creds, label string) (int64, string) {
	e.T.Helper()
	pub := NewPublicKey(label + "@test")
	var k struct {
		PK int64 `json:"pk"`
	}
	e.Must(http.StatusOK, c, "POST", "/ssh_keys/", nil, map[string]any{"label": label, "ssh_key": pub}).Into(e.T, &k)
	return k.PK, pub
}

// AddGroup creates a security group opening TCP port to anyone.
func (e *Env) AddGroup(c Creds, name string, port int) int64 {
	e.T.Helper()
	var g struct {
		ID int64 `json:"id"`
	}
	e.Must(http.StatusCreated, c, "POST", "/security_groups/", nil, map[string]any{"name": name, "description": "test",
		"rules": []map[string]any{{"rule_type": "inbound", "protocol_type": "CustomTCP", "network_type": "any", "ports": []int{port}}}}).Into(e.T, &g)
	return g.ID
}

// ClusterBody is a valid create body for a cluster of workers nodes.
func ClusterBody(name string, workers int, keyID, groupID int64) map[string]any {
	return map[string]any{"name": name, "image_version_id": 1, "ssh_key_ids": []int64{keyID}, "security_group_id": groupID,
		"sku_id": 309, "no_of_nodes": workers, "sku_item_price_id": 3416}
}

// NewCluster creates a cluster with a new key and group and waits until it is Running.
func (e *Env) NewCluster(c Creds, name string, workers int) Cluster {
	e.T.Helper()
	keyID, _ := e.AddKey(c, name+"-key")
	groupID := e.AddGroup(c, name+"-sg", 22)
	var cl Cluster
	e.Must(http.StatusCreated, c, "POST", "/distributed_jobs_v2/cluster/", nil, ClusterBody(name, workers, keyID, groupID)).Into(e.T, &cl)
	return e.WaitStatus(c, cl.ID, "Running")
}

// GetCluster reads a cluster.
func (e *Env) GetCluster(c Creds, id int64) Cluster {
	e.T.Helper()
	var cl Cluster
	e.Must(http.StatusOK, c, "GET", ClusterPath(id), nil, nil).Into(e.T, &cl)
	return cl
}

// WaitStatus waits until the cluster has status.
func (e *Env) WaitStatus(c Creds, id int64, status string) Cluster {
	e.T.Helper()
	var cl Cluster
	e.Eventually(20*time.Second, fmt.Sprintf("cluster %d to be %s", id, status), func() bool {
		cl = e.GetCluster(c, id)
		return cl.Status == status
	})
	return cl
}

// ClusterPath is the path of a cluster.
func ClusterPath(id int64) string { return fmt.Sprintf("/distributed_jobs_v2/cluster/%d/", id) }

// GetAction reads an action.
func (e *Env) GetAction(c Creds, clusterID, actionID int64) Action {
	e.T.Helper()
	var a Action
	e.Must(http.StatusOK, c, "GET", fmt.Sprintf("%sactions/%d/", ClusterPath(clusterID), actionID), nil, nil).Into(e.T, &a)
	return a
}

// WaitAction waits until an action is finished and returns it.
func (e *Env) WaitAction(c Creds, clusterID, actionID int64) Action {
	e.T.Helper()
	var a Action
	e.Eventually(30*time.Second, fmt.Sprintf("action %d to finish", actionID), func() bool {
		a = e.GetAction(c, clusterID, actionID)
		return a.Status == "succeeded" || a.Status == "failed" || a.Status == "canceled"
	})
	return a
}

// Act sends a Cluster Action and returns the answer; the action id is in the
// Trainyard-Action-Id header.
func (e *Env) Act(c Creds, clusterID int64, body map[string]any, header ...string) Response {
	e.T.Helper()
	return e.Call(c, "PUT", ClusterPath(clusterID), nil, body, header...)
}

// ActOK sends a Cluster Action that must be accepted, waits for it to finish and returns it.
func (e *Env) ActOK(c Creds, clusterID int64, body map[string]any) Action {
	e.T.Helper()
	r := e.Act(c, clusterID, body)
	if r.Status != http.StatusOK {
		e.T.Fatalf("action %v: status %d: %s", body, r.Status, r.Raw)
	}
	id := r.ActionID()
	if id == 0 {
		e.T.Fatalf("action %v: no Trainyard-Action-Id header", body)
	}
	return e.WaitAction(c, clusterID, id)
}
