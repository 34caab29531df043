package store

import (
	"context"
	"time"
)

// AcquireLease gives holder the cluster's lease until now+ttl if the lease is free, expired or
// already holder's (a renewal). It reports whether holder has the lease.
func (tx *Tx) AcquireLease(ctx context.Context, clusterID int64, holder string, ttl time.Duration) (bool, error) {
	r, err := tx.exec(ctx, `INSERT INTO leases (cluster_id, holder, expires_at) VALUES (?, ?, ?)
	  ON CONFLICT (cluster_id) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
	  WHERE leases.holder = excluded.holder OR leases.expires_at < ?`,
		clusterID, holder, formatTime(tx.now.Add(ttl)), formatTime(tx.now))
	if err != nil {
		return false, err
	}
	n, err := r.RowsAffected()
	return n == 1, wrapDBError(err)
}

// ReleaseLease gives up holder's lease on the cluster.
func (tx *Tx) ReleaseLease(ctx context.Context, clusterID int64, holder string) error {
	_, err := tx.exec(ctx, `DELETE FROM leases WHERE cluster_id = ? AND holder = ?`, clusterID, holder)
	return err
}

// LeaseHolder returns who holds the cluster's lease and until when ("" when nobody).
func (tx *Tx) LeaseHolder(ctx context.Context, clusterID int64) (string, time.Time, error) {
	var holder, until string
	err := tx.queryRow(ctx, `SELECT holder, expires_at FROM leases WHERE cluster_id = ?`, clusterID).Scan(&holder, &until)
	if err != nil {
		return "", time.Time{}, nil
	}
	return holder, parseTime(until), nil
}
