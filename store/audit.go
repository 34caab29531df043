package store

import (
	"context"
	"time"
)

// AuditEntry is one mutating API call.
type AuditEntry struct {
	ID        int64
	At        time.Time
	AccountID int64
	UserID    int64
	UserEmail string
	ActiveIAM int64
	APIKeyID  int64
	Method    string
	Path      string
	Operation string // e.g. "PUT cluster restart_workers"
	Status    int
}

// AddAudit records a call.
func (tx *Tx) AddAudit(ctx context.Context, e AuditEntry) error {
	_, err := tx.exec(ctx, `INSERT INTO audit_log (at, account_id, user_id, active_iam, api_key_id, method, path, operation, status)
	  VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`, formatTime(tx.now), e.AccountID, e.UserID, e.ActiveIAM, e.APIKeyID, e.Method, e.Path, e.Operation, e.Status)
	return err
}

// AuditLog lists an account's audit entries, newest first.
func (tx *Tx) AuditLog(ctx context.Context, accountID int64, page Page) ([]AuditEntry, int, error) {
	total, err := tx.count(ctx, `SELECT COUNT(*) FROM audit_log WHERE account_id = ?`, accountID)
	if err != nil {
		return nil, 0, err
	}
	limit, offset := page.limitOffset()
	rows, err := tx.query(ctx, `SELECT a.id, a.at, a.account_id, a.user_id, u.email, a.active_iam, a.api_key_id, a.method, a.path, a.operation, a.status
	  FROM audit_log a JOIN users u ON u.id = a.user_id WHERE a.account_id = ? ORDER BY a.id DESC LIMIT ? OFFSET ?`, accountID, limit, offset)
	if err != nil {
		return nil, 0, wrapDBError(err)
	}
	defer rows.Close()
	var out []AuditEntry
	for rows.Next() {
		var e AuditEntry
		var at string
		if err := rows.Scan(&e.ID, &at, &e.AccountID, &e.UserID, &e.UserEmail, &e.ActiveIAM, &e.APIKeyID, &e.Method, &e.Path, &e.Operation, &e.Status); err != nil {
			return nil, 0, wrapDBError(err)
		}
		e.At = parseTime(at)
		out = append(out, e)
	}
	return out, total, wrapDBError(rows.Err())
}

// RevokeAPIKey revokes the key pair whose API key hashes to keyHash; it reports whether there
// was such a pair.
func (tx *Tx) RevokeAPIKey(ctx context.Context, keyHash string) (bool, error) {
	r, err := tx.exec(ctx, `UPDATE api_keys SET revoked_at = ? WHERE key_hash = ? AND revoked_at IS NULL`, formatTime(tx.now), keyHash)
	if err != nil {
		return false, err
	}
	n, err := r.RowsAffected()
	return n == 1, wrapDBError(err)
}
