package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"

	"github.com/trainyard/trainyard"
)

type mounts struct {
	SFS     []trainyard.Mount `json:"sfs"`
	PFS     []trainyard.Mount `json:"pfs"`
	Dataset []trainyard.Mount `json:"dataset"`
}

// CreateCluster stores a new cluster with its security groups; c.ID is set.
func (tx *Tx) CreateCluster(ctx context.Context, c *trainyard.Cluster) error {
	c.CreatedAt, c.UpdatedAt = tx.now, tx.now
	m, _ := json.Marshal(mounts{c.SFSMounts, c.PFSMounts, c.DatasetMounts})
	keys, _ := json.Marshal(c.SSHKeys)
	var err error
	c.ID, err = tx.insert(ctx, `INSERT INTO clusters (account_id, project_id, location, name, created_by, sku_id, plan_id, status,
	  created_at, updated_at, script_added, lifecycle_script, mounts, image_version_id, workers, ssh_keys, reserved_ip_id,
	  worker_restart_gen, controller_restart_gen, network_gen, current_action_id)
	  VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		c.AccountID, c.ProjectID, c.Location, c.Name, c.CreatedBy.ID, c.SKUID, c.PlanID, c.Status,
		formatTime(tx.now), formatTime(tx.now), boolInt(c.ScriptAdded), c.LifecycleScript, string(m), c.ImageVersionID,
		c.Workers, string(keys), c.ReservedIPID, c.WorkerRestartGen, c.ControllerRestartGen, c.NetworkGen, c.CurrentActionID)
	if err != nil {
		return err
	}
	return tx.setClusterGroups(ctx, c.ID, c.SecurityGroupIDs)
}

// UpdateCluster writes every mutable field of c (status, desired state, current action).
func (tx *Tx) UpdateCluster(ctx context.Context, c *trainyard.Cluster) error {
	c.UpdatedAt = tx.now
	keys, _ := json.Marshal(c.SSHKeys)
	_, err := tx.exec(ctx, `UPDATE clusters SET status = ?, updated_at = ?, image_version_id = ?, workers = ?, ssh_keys = ?,
	  reserved_ip_id = ?, worker_restart_gen = ?, controller_restart_gen = ?, network_gen = ?, current_action_id = ? WHERE id = ?`,
		c.Status, formatTime(tx.now), c.ImageVersionID, c.Workers, string(keys), c.ReservedIPID, c.WorkerRestartGen,
		c.ControllerRestartGen, c.NetworkGen, c.CurrentActionID, c.ID)
	if err != nil {
		return err
	}
	return tx.setClusterGroups(ctx, c.ID, c.SecurityGroupIDs)
}

func (tx *Tx) setClusterGroups(ctx context.Context, clusterID int64, groups []int64) error {
	if _, err := tx.exec(ctx, `DELETE FROM cluster_security_groups WHERE cluster_id = ?`, clusterID); err != nil {
		return err
	}
	for _, g := range groups {
		if _, err := tx.exec(ctx, `INSERT INTO cluster_security_groups (cluster_id, group_id) VALUES (?, ?)`, clusterID, g); err != nil {
			return err
		}
	}
	return nil
}

// AcquireClusterSlot makes actionID the cluster's node-changing action if the cluster is in one
// of the statuses from and has none: a compare-and-swap, so that of two concurrent requests
// exactly one wins. It returns false, and changes nothing, when it lost.
func (tx *Tx) AcquireClusterSlot(ctx context.Context, clusterID, actionID int64, to string, from ...string) (bool, error) {
	q := `UPDATE clusters SET current_action_id = ?, status = ?, updated_at = ? WHERE id = ? AND current_action_id = 0 AND status IN (`
	args := []any{actionID, to, formatTime(tx.now), clusterID}
	for i, s := range from {
		if i > 0 {
			q += ", "
		}
		q += "?"
		args = append(args, s)
	}
	r, err := tx.exec(ctx, q+")", args...)
	if err != nil {
		return false, err
	}
	n, err := r.RowsAffected()
	return n == 1, wrapDBError(err)
}

const clusterSelect = `SELECT c.id, c.account_id, c.project_id, c.location, c.name, c.sku_id, c.plan_id, c.status, c.created_at,
  c.updated_at, c.script_added, c.lifecycle_script, c.mounts, c.image_version_id, c.workers, c.ssh_keys, c.reserved_ip_id,
  c.worker_restart_gen, c.controller_restart_gen, c.network_gen, c.current_action_id, u.id, u.name, u.email
  FROM clusters c JOIN users u ON u.id = c.created_by`

func scanCluster(sc interface{ Scan(...any) error }) (*trainyard.Cluster, error) {
	var c trainyard.Cluster
	var created, updated, m, keys string
	var script int
	err := sc.Scan(&c.ID, &c.AccountID, &c.ProjectID, &c.Location, &c.Name, &c.SKUID, &c.PlanID, &c.Status, &created,
		&updated, &script, &c.LifecycleScript, &m, &c.ImageVersionID, &c.Workers, &keys, &c.ReservedIPID,
		&c.WorkerRestartGen, &c.ControllerRestartGen, &c.NetworkGen, &c.CurrentActionID, &c.CreatedBy.ID, &c.CreatedBy.Name, &c.CreatedBy.Email)
	if err != nil {
		return nil, err
	}
	c.CreatedAt, c.UpdatedAt, c.ScriptAdded = parseTime(created), parseTime(updated), script == 1
	var ms mounts
	if err := json.Unmarshal([]byte(m), &ms); err != nil {
		return nil, err
	}
	c.SFSMounts, c.PFSMounts, c.DatasetMounts = ms.SFS, ms.PFS, ms.Dataset
	if err := json.Unmarshal([]byte(keys), &c.SSHKeys); err != nil {
		return nil, err
	}
	return &c, nil
}

func (tx *Tx) loadGroups(ctx context.Context, cs []*trainyard.Cluster) error {
	for _, c := range cs {
		var err error
		if c.SecurityGroupIDs, err = tx.ids(ctx, `SELECT group_id FROM cluster_security_groups WHERE cluster_id = ? ORDER BY group_id`, c.ID); err != nil {
			return err
		}
	}
	return nil
}

// Cluster returns a cluster by id whatever its account (for the reconciler); deleted clusters
// are returned too.
func (tx *Tx) Cluster(ctx context.Context, id int64) (*trainyard.Cluster, error) {
	c, err := scanCluster(tx.queryRow(ctx, clusterSelect+` WHERE c.id = ?`, id))
	if err != nil {
		return nil, wrapDBError(err)
	}
	return c, tx.loadGroups(ctx, []*trainyard.Cluster{c})
}

// ClusterInScope returns a live cluster of the project in location; ok is false when there is
// none there, including when it belongs to someone else.
func (tx *Tx) ClusterInScope(ctx context.Context, accountID, projectID int64, location string, id int64, includeDeleted bool) (*trainyard.Cluster, bool, error) {
	q := clusterSelect + ` WHERE c.id = ? AND c.account_id = ? AND c.project_id = ? AND c.location = ?`
	if !includeDeleted {
		q += ` AND c.status <> '` + trainyard.StatusDeleted + `'`
	}
	c, err := scanCluster(tx.queryRow(ctx, q, id, accountID, projectID, location))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, wrapDBError(err)
	}
	return c, true, tx.loadGroups(ctx, []*trainyard.Cluster{c})
}

// Clusters lists the live clusters of a project in a location, newest first.
func (tx *Tx) Clusters(ctx context.Context, accountID, projectID int64, location string, page Page) ([]*trainyard.Cluster, int, error) {
	where := ` WHERE c.account_id = ? AND c.project_id = ? AND c.location = ? AND c.status <> '` + trainyard.StatusDeleted + `'`
	total, err := tx.count(ctx, `SELECT COUNT(*) FROM clusters c`+where, accountID, projectID, location)
	if err != nil {
		return nil, 0, err
	}
	limit, offset := page.limitOffset()
	rows, err := tx.query(ctx, clusterSelect+where+` ORDER BY c.id DESC LIMIT ? OFFSET ?`, accountID, projectID, location, limit, offset)
	if err != nil {
		return nil, 0, wrapDBError(err)
	}
	var out []*trainyard.Cluster
	for rows.Next() {
		c, err := scanCluster(rows)
		if err != nil {
			rows.Close()
			return nil, 0, wrapDBError(err)
		}
		out = append(out, c)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, 0, wrapDBError(err)
	}
	return out, total, tx.loadGroups(ctx, out)
}

// LiveClusterIDs returns the ids of clusters that are not deleted, for the reconciler.
func (tx *Tx) LiveClusterIDs(ctx context.Context) ([]int64, error) {
	return tx.ids(ctx, `SELECT id FROM clusters WHERE status <> ? ORDER BY id`, trainyard.StatusDeleted)
}

// CreateNode adds a node to a cluster.
func (tx *Tx) CreateNode(ctx context.Context, n trainyard.Node) (trainyard.Node, error) {
	n.CreatedAt = tx.now
	var err error
	n.ID, err = tx.insert(ctx, `INSERT INTO nodes (cluster_id, name, role, idx, created_at) VALUES (?, ?, ?, ?, ?)`,
		n.ClusterID, n.Name, n.Role, n.Index, formatTime(tx.now))
	return n, err
}

// Nodes returns a cluster's nodes, the controller first, then workers in creation order.
func (tx *Tx) Nodes(ctx context.Context, clusterID int64) ([]trainyard.Node, error) {
	rows, err := tx.query(ctx, `SELECT id, cluster_id, name, role, idx, created_at FROM nodes WHERE cluster_id = ? ORDER BY idx`, clusterID)
	if err != nil {
		return nil, wrapDBError(err)
	}
	defer rows.Close()
	var out []trainyard.Node
	for rows.Next() {
		var n trainyard.Node
		var created string
		if err := rows.Scan(&n.ID, &n.ClusterID, &n.Name, &n.Role, &n.Index, &created); err != nil {
			return nil, wrapDBError(err)
		}
		n.CreatedAt = parseTime(created)
		out = append(out, n)
	}
	return out, wrapDBError(rows.Err())
}

// DeleteNode removes a node that never joined (a scale that did not finish).
func (tx *Tx) DeleteNode(ctx context.Context, clusterID int64, name string) error {
	_, err := tx.exec(ctx, `DELETE FROM nodes WHERE cluster_id = ? AND name = ?`, clusterID, name)
	return err
}
