package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"

	"github.com/trainyard/trainyard"
)

// CreateSSHKey adds a key to the account's library; a key already there is an EINVALID error.
func (tx *Tx) CreateSSHKey(ctx context.Context, k trainyard.SSHKey) (trainyard.SSHKey, error) {
	n, err := tx.count(ctx, `SELECT COUNT(*) FROM ssh_keys WHERE account_id = ? AND fingerprint = ?`, k.AccountID, k.Fingerprint)
	if err != nil {
		return k, err
	}
	if n > 0 {
		return k, trainyard.FieldError("ssh_key", "this key (%s) is already in your account", k.Fingerprint)
	}
	k.CreatedAt = tx.now
	k.ID, err = tx.insert(ctx, `INSERT INTO ssh_keys (account_id, label, public_key, fingerprint, created_at) VALUES (?, ?, ?, ?, ?)`,
		k.AccountID, k.Label, k.PublicKey, k.Fingerprint, formatTime(tx.now))
	return k, err
}

const sshKeySelect = `SELECT id, account_id, label, public_key, fingerprint, created_at FROM ssh_keys`

func scanSSHKey(sc interface{ Scan(...any) error }) (trainyard.SSHKey, error) {
	var k trainyard.SSHKey
	var created string
	err := sc.Scan(&k.ID, &k.AccountID, &k.Label, &k.PublicKey, &k.Fingerprint, &created)
	k.CreatedAt = parseTime(created)
	return k, err
}

// SSHKey returns a key of the account; ok is false when the account has no such key.
func (tx *Tx) SSHKey(ctx context.Context, accountID, id int64) (trainyard.SSHKey, bool, error) {
	k, err := scanSSHKey(tx.queryRow(ctx, sshKeySelect+` WHERE id = ? AND account_id = ?`, id, accountID))
	if errors.Is(err, sql.ErrNoRows) {
		return k, false, nil
	}
	return k, err == nil, wrapDBError(err)
}

// SSHKeys lists an account's keys.
func (tx *Tx) SSHKeys(ctx context.Context, accountID int64, page Page) ([]trainyard.SSHKey, int, error) {
	total, err := tx.count(ctx, `SELECT COUNT(*) FROM ssh_keys WHERE account_id = ?`, accountID)
	if err != nil {
		return nil, 0, err
	}
	limit, offset := page.limitOffset()
	rows, err := tx.query(ctx, sshKeySelect+` WHERE account_id = ? ORDER BY id LIMIT ? OFFSET ?`, accountID, limit, offset)
	if err != nil {
		return nil, 0, wrapDBError(err)
	}
	defer rows.Close()
	var out []trainyard.SSHKey
	for rows.Next() {
		k, err := scanSSHKey(rows)
		if err != nil {
			return nil, 0, wrapDBError(err)
		}
		out = append(out, k)
	}
	return out, total, wrapDBError(rows.Err())
}

// DeleteSSHKey removes a key from the account's library.
func (tx *Tx) DeleteSSHKey(ctx context.Context, accountID, id int64) error {
	_, err := tx.exec(ctx, `DELETE FROM ssh_keys WHERE id = ? AND account_id = ?`, id, accountID)
	return err
}

// CreateReservedIP stores a reservation of address; an address already reserved in the location
// fails on the unique index.
func (tx *Tx) CreateReservedIP(ctx context.Context, ip trainyard.ReservedIP) (trainyard.ReservedIP, error) {
	ip.CreatedAt = tx.now
	ip.Status = trainyard.IPAvailable
	var err error
	ip.ID, err = tx.insert(ctx, `INSERT INTO reserved_ips (account_id, project_id, location, address, status, cluster_id, reserved_by, created_at) VALUES (?, ?, ?, ?, ?, 0, ?, ?)`,
		ip.AccountID, ip.ProjectID, ip.Location, ip.Address, ip.Status, ip.ReservedBy.ID, formatTime(tx.now))
	return ip, err
}

// ReservedAddresses returns every address reserved in location.
func (tx *Tx) ReservedAddresses(ctx context.Context, location string) (map[string]bool, error) {
	rows, err := tx.query(ctx, `SELECT address FROM reserved_ips WHERE location = ?`, location)
	if err != nil {
		return nil, wrapDBError(err)
	}
	defer rows.Close()
	out := map[string]bool{}
	for rows.Next() {
		var a string
		if err := rows.Scan(&a); err != nil {
			return nil, wrapDBError(err)
		}
		out[a] = true
	}
	return out, wrapDBError(rows.Err())
}

const reservedIPSelect = `SELECT r.id, r.account_id, r.project_id, r.location, r.address, r.status, r.cluster_id, r.created_at,
  u.id, u.name, u.email FROM reserved_ips r JOIN users u ON u.id = r.reserved_by`

func scanReservedIP(sc interface{ Scan(...any) error }) (trainyard.ReservedIP, error) {
	var ip trainyard.ReservedIP
	var created string
	err := sc.Scan(&ip.ID, &ip.AccountID, &ip.ProjectID, &ip.Location, &ip.Address, &ip.Status, &ip.ClusterID, &created,
		&ip.ReservedBy.ID, &ip.ReservedBy.Name, &ip.ReservedBy.Email)
	ip.CreatedAt = parseTime(created)
	return ip, err
}

// ReservedIP returns a reserved IP of the account; ok is false when there is none.
func (tx *Tx) ReservedIP(ctx context.Context, accountID, id int64) (trainyard.ReservedIP, bool, error) {
	ip, err := scanReservedIP(tx.queryRow(ctx, reservedIPSelect+` WHERE r.id = ? AND r.account_id = ?`, id, accountID))
	if errors.Is(err, sql.ErrNoRows) {
		return ip, false, nil
	}
	return ip, err == nil, wrapDBError(err)
}

// ReservedIPs lists the reserved IPs of a project in a location.
func (tx *Tx) ReservedIPs(ctx context.Context, accountID, projectID int64, location string, page Page) ([]trainyard.ReservedIP, int, error) {
	where := ` WHERE r.account_id = ? AND r.project_id = ? AND r.location = ?`
	total, err := tx.count(ctx, `SELECT COUNT(*) FROM reserved_ips r`+where, accountID, projectID, location)
	if err != nil {
		return nil, 0, err
	}
	limit, offset := page.limitOffset()
	rows, err := tx.query(ctx, reservedIPSelect+where+` ORDER BY r.id LIMIT ? OFFSET ?`, accountID, projectID, location, limit, offset)
	if err != nil {
		return nil, 0, wrapDBError(err)
	}
	defer rows.Close()
	var out []trainyard.ReservedIP
	for rows.Next() {
		ip, err := scanReservedIP(rows)
		if err != nil {
			return nil, 0, wrapDBError(err)
		}
		out = append(out, ip)
	}
	return out, total, wrapDBError(rows.Err())
}

// SetReservedIPAttachment marks an IP attached to cluster (clusterID > 0) or available (0).
func (tx *Tx) SetReservedIPAttachment(ctx context.Context, id, clusterID int64) error {
	status := trainyard.IPAvailable
	if clusterID > 0 {
		status = trainyard.IPAttached
	}
	_, err := tx.exec(ctx, `UPDATE reserved_ips SET status = ?, cluster_id = ? WHERE id = ?`, status, clusterID, id)
	return err
}

// ReleaseReservedIPsOfCluster makes every reserved IP attached to the cluster available (one
// being detached included).
func (tx *Tx) ReleaseReservedIPsOfCluster(ctx context.Context, clusterID int64) error {
	_, err := tx.exec(ctx, `UPDATE reserved_ips SET status = ?, cluster_id = 0 WHERE cluster_id = ?`, trainyard.IPAvailable, clusterID)
	return err
}

// DeleteReservedIP releases an address back to the pool.
func (tx *Tx) DeleteReservedIP(ctx context.Context, id int64) error {
	_, err := tx.exec(ctx, `DELETE FROM reserved_ips WHERE id = ?`, id)
	return err
}

// CreateSecurityGroup stores a group.
func (tx *Tx) CreateSecurityGroup(ctx context.Context, g trainyard.SecurityGroup) (trainyard.SecurityGroup, error) {
	g.CreatedAt = tx.now
	rules, _ := json.Marshal(g.Rules)
	var err error
	g.ID, err = tx.insert(ctx, `INSERT INTO security_groups (account_id, project_id, location, name, description, rules, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		g.AccountID, g.ProjectID, g.Location, g.Name, g.Description, string(rules), formatTime(tx.now))
	return g, err
}

const securityGroupSelect = `SELECT id, account_id, project_id, location, name, description, rules, created_at FROM security_groups`

func scanSecurityGroup(sc interface{ Scan(...any) error }) (trainyard.SecurityGroup, error) {
	var g trainyard.SecurityGroup
	var rules, created string
	err := sc.Scan(&g.ID, &g.AccountID, &g.ProjectID, &g.Location, &g.Name, &g.Description, &rules, &created)
	if err == nil {
		err = json.Unmarshal([]byte(rules), &g.Rules)
	}
	g.CreatedAt = parseTime(created)
	return g, err
}

// SecurityGroup returns a group of the project in location; ok is false when there is none.
func (tx *Tx) SecurityGroup(ctx context.Context, accountID, projectID int64, location string, id int64) (trainyard.SecurityGroup, bool, error) {
	g, err := scanSecurityGroup(tx.queryRow(ctx, securityGroupSelect+` WHERE id = ? AND account_id = ? AND project_id = ? AND location = ?`,
		id, accountID, projectID, location))
	if errors.Is(err, sql.ErrNoRows) {
		return g, false, nil
	}
	return g, err == nil, wrapDBError(err)
}

// SecurityGroups lists the groups of a project in a location.
func (tx *Tx) SecurityGroups(ctx context.Context, accountID, projectID int64, location string, page Page) ([]trainyard.SecurityGroup, int, error) {
	where := ` WHERE account_id = ? AND project_id = ? AND location = ?`
	total, err := tx.count(ctx, `SELECT COUNT(*) FROM security_groups`+where, accountID, projectID, location)
	if err != nil {
		return nil, 0, err
	}
	limit, offset := page.limitOffset()
	rows, err := tx.query(ctx, securityGroupSelect+where+` ORDER BY id LIMIT ? OFFSET ?`, accountID, projectID, location, limit, offset)
	if err != nil {
		return nil, 0, wrapDBError(err)
	}
	defer rows.Close()
	var out []trainyard.SecurityGroup
	for rows.Next() {
		g, err := scanSecurityGroup(rows)
		if err != nil {
			return nil, 0, wrapDBError(err)
		}
		out = append(out, g)
	}
	return out, total, wrapDBError(rows.Err())
}

// SetSecurityGroupRules replaces a group's rules.
func (tx *Tx) SetSecurityGroupRules(ctx context.Context, id int64, rules []trainyard.SecurityRule) error {
	b, _ := json.Marshal(rules)
	_, err := tx.exec(ctx, `UPDATE security_groups SET rules = ? WHERE id = ?`, string(b), id)
	return err
}

// DeleteSecurityGroup removes a group.
func (tx *Tx) DeleteSecurityGroup(ctx context.Context, id int64) error {
	_, err := tx.exec(ctx, `DELETE FROM security_groups WHERE id = ?`, id)
	return err
}

// ClustersUsingSecurityGroup returns the ids of live clusters the group is applied to.
func (tx *Tx) ClustersUsingSecurityGroup(ctx context.Context, groupID int64) ([]int64, error) {
	return tx.ids(ctx, `SELECT c.id FROM cluster_security_groups g JOIN clusters c ON c.id = g.cluster_id
	  WHERE g.group_id = ? AND c.status <> ? ORDER BY c.id`, groupID, trainyard.StatusDeleted)
}
