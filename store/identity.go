package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"

	"github.com/trainyard/trainyard"
)

// UserByEmail returns the user with that email; ok is false when there is none.
func (tx *Tx) UserByEmail(ctx context.Context, email string) (u trainyard.User, ok bool, err error) {
	var created string
	err = tx.queryRow(ctx, `SELECT id, name, email, created_at FROM users WHERE email = ?`, email).
		Scan(&u.ID, &u.Name, &u.Email, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return u, false, nil
	}
	u.CreatedAt = parseTime(created)
	return u, err == nil, wrapDBError(err)
}

// User returns a user by id.
func (tx *Tx) User(ctx context.Context, id int64) (trainyard.User, error) {
	var u trainyard.User
	var created string
	err := tx.queryRow(ctx, `SELECT id, name, email, created_at FROM users WHERE id = ?`, id).
		Scan(&u.ID, &u.Name, &u.Email, &created)
	u.CreatedAt = parseTime(created)
	return u, wrapDBError(err)
}

// CreateUser adds a user.
func (tx *Tx) CreateUser(ctx context.Context, name, email string) (trainyard.User, error) {
	id, err := tx.insert(ctx, `INSERT INTO users (name, email, created_at) VALUES (?, ?, ?)`, name, email, formatTime(tx.now))
	return trainyard.User{ID: id, Name: name, Email: email, CreatedAt: tx.now}, err
}

// CreateAccount adds an account owned by owner, with the owner's membership and a default
// project, and returns the owner's membership.
func (tx *Tx) CreateAccount(ctx context.Context, owner trainyard.User, name, currency string) (trainyard.Membership, trainyard.Project, error) {
	accID, err := tx.insert(ctx, `INSERT INTO accounts (owner_user_id, name, currency, created_at) VALUES (?, ?, ?, ?)`,
		owner.ID, name, currency, formatTime(tx.now))
	if err != nil {
		return trainyard.Membership{}, trainyard.Project{}, err
	}
	m, err := tx.CreateMembership(ctx, accID, owner.ID, trainyard.RoleOwner)
	if err != nil {
		return m, trainyard.Project{}, err
	}
	p, err := tx.CreateProject(ctx, accID, "default-project", true)
	return m, p, err
}

// CreateMembership gives user access to account with role.
func (tx *Tx) CreateMembership(ctx context.Context, accountID, userID int64, role string) (trainyard.Membership, error) {
	id, err := tx.insert(ctx, `INSERT INTO memberships (account_id, user_id, role, created_at) VALUES (?, ?, ?, ?)`,
		accountID, userID, role, formatTime(tx.now))
	if err != nil {
		return trainyard.Membership{}, err
	}
	return tx.Membership(ctx, id)
}

// SetMembershipRole changes the role of a membership.
func (tx *Tx) SetMembershipRole(ctx context.Context, id int64, role string) error {
	_, err := tx.exec(ctx, `UPDATE memberships SET role = ? WHERE id = ?`, role, id)
	return err
}

const membershipSelect = `SELECT m.id, m.account_id, m.user_id, m.role, m.created_at,
  a.name, a.currency, a.created_at, u.id, u.name, u.email, u.created_at
  FROM memberships m JOIN accounts a ON a.id = m.account_id JOIN users u ON u.id = a.owner_user_id`

func scanMembership(sc interface{ Scan(...any) error }) (trainyard.Membership, error) {
	var m trainyard.Membership
	var mc, ac, uc string
	err := sc.Scan(&m.ID, &m.AccountID, &m.UserID, &m.Role, &mc, &m.Account.Name, &m.Account.Currency, &ac,
		&m.Account.Owner.ID, &m.Account.Owner.Name, &m.Account.Owner.Email, &uc)
	m.CreatedAt, m.Account.CreatedAt, m.Account.Owner.CreatedAt = parseTime(mc), parseTime(ac), parseTime(uc)
	m.Account.ID = m.AccountID
	return m, err
}

// Membership returns an IAM entry by id.
func (tx *Tx) Membership(ctx context.Context, id int64) (trainyard.Membership, error) {
	m, err := scanMembership(tx.queryRow(ctx, membershipSelect+` WHERE m.id = ?`, id))
	return m, wrapDBError(err)
}

// MembershipOf returns the membership of user in account; ok is false when there is none.
func (tx *Tx) MembershipOf(ctx context.Context, accountID, userID int64) (trainyard.Membership, bool, error) {
	m, err := scanMembership(tx.queryRow(ctx, membershipSelect+` WHERE m.account_id = ? AND m.user_id = ?`, accountID, userID))
	if errors.Is(err, sql.ErrNoRows) {
		return m, false, nil
	}
	return m, err == nil, wrapDBError(err)
}

// MembershipsOfUser lists every account the user may act in, their own first.
func (tx *Tx) MembershipsOfUser(ctx context.Context, userID int64) ([]trainyard.Membership, error) {
	rows, err := tx.query(ctx, membershipSelect+` WHERE m.user_id = ? ORDER BY (m.role = 'owner') DESC, m.id`, userID)
	if err != nil {
		return nil, wrapDBError(err)
	}
	defer rows.Close()
	var out []trainyard.Membership
	for rows.Next() {
		m, err := scanMembership(rows)
		if err != nil {
			return nil, wrapDBError(err)
		}
		out = append(out, m)
	}
	return out, wrapDBError(rows.Err())
}

// OwnMembership returns the user's membership of their own account.
func (tx *Tx) OwnMembership(ctx context.Context, userID int64) (trainyard.Membership, bool, error) {
	m, err := scanMembership(tx.queryRow(ctx, membershipSelect+` WHERE m.user_id = ? AND m.role = 'owner' ORDER BY m.id LIMIT 1`, userID))
	if errors.Is(err, sql.ErrNoRows) {
		return m, false, nil
	}
	return m, err == nil, wrapDBError(err)
}

// APIKey is a stored key pair: only hashes are kept.
type APIKey struct {
	ID        int64
	UserID    int64
	KeyHash   string
	TokenHash string
	Revoked   bool
}

// CreateAPIKey stores the hashes of a new key pair for user.
func (tx *Tx) CreateAPIKey(ctx context.Context, userID int64, keyHash, tokenHash string) (int64, error) {
	return tx.insert(ctx, `INSERT INTO api_keys (user_id, key_hash, token_hash, created_at) VALUES (?, ?, ?, ?)`,
		userID, keyHash, tokenHash, formatTime(tx.now))
}

// APIKeyByHash finds a key pair by the hash of its API key.
func (tx *Tx) APIKeyByHash(ctx context.Context, keyHash string) (APIKey, bool, error) {
	var k APIKey
	var revoked sql.NullString
	err := tx.queryRow(ctx, `SELECT id, user_id, key_hash, token_hash, revoked_at FROM api_keys WHERE key_hash = ?`, keyHash).
		Scan(&k.ID, &k.UserID, &k.KeyHash, &k.TokenHash, &revoked)
	if errors.Is(err, sql.ErrNoRows) {
		return k, false, nil
	}
	k.Revoked = revoked.Valid
	return k, err == nil, wrapDBError(err)
}

// RevokeAPIKeys revokes every key pair of user.
func (tx *Tx) RevokeAPIKeys(ctx context.Context, userID int64) error {
	_, err := tx.exec(ctx, `UPDATE api_keys SET revoked_at = ? WHERE user_id = ? AND revoked_at IS NULL`, formatTime(tx.now), userID)
	return err
}

// CreateProject adds a project to an account. A duplicate name is an EINVALID error.
func (tx *Tx) CreateProject(ctx context.Context, accountID int64, name string, isDefault bool) (trainyard.Project, error) {
	n, err := tx.count(ctx, `SELECT COUNT(*) FROM projects WHERE account_id = ? AND name = ?`, accountID, name)
	if err != nil {
		return trainyard.Project{}, err
	}
	if n > 0 {
		return trainyard.Project{}, trainyard.FieldError("name", "a project named %q already exists", name)
	}
	id, err := tx.insert(ctx, `INSERT INTO projects (account_id, name, is_default, created_at) VALUES (?, ?, ?, ?)`,
		accountID, name, boolInt(isDefault), formatTime(tx.now))
	return trainyard.Project{ID: id, AccountID: accountID, Name: name, IsDefault: isDefault, CreatedAt: tx.now}, err
}

// Project returns a project of the account; ok is false when the account has no such project.
func (tx *Tx) Project(ctx context.Context, accountID, id int64) (trainyard.Project, bool, error) {
	var p trainyard.Project
	var def int
	var created string
	err := tx.queryRow(ctx, `SELECT id, account_id, name, is_default, created_at FROM projects WHERE id = ? AND account_id = ?`, id, accountID).
		Scan(&p.ID, &p.AccountID, &p.Name, &def, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return p, false, nil
	}
	p.IsDefault, p.CreatedAt = def == 1, parseTime(created)
	return p, err == nil, wrapDBError(err)
}

// Projects lists an account's projects and counts them all.
func (tx *Tx) Projects(ctx context.Context, accountID int64, page Page) ([]trainyard.Project, int, error) {
	total, err := tx.count(ctx, `SELECT COUNT(*) FROM projects WHERE account_id = ?`, accountID)
	if err != nil {
		return nil, 0, err
	}
	limit, offset := page.limitOffset()
	rows, err := tx.query(ctx, `SELECT id, account_id, name, is_default, created_at FROM projects WHERE account_id = ? ORDER BY id LIMIT ? OFFSET ?`, accountID, limit, offset)
	if err != nil {
		return nil, 0, wrapDBError(err)
	}
	defer rows.Close()
	var out []trainyard.Project
	for rows.Next() {
		var p trainyard.Project
		var def int
		var created string
		if err := rows.Scan(&p.ID, &p.AccountID, &p.Name, &def, &created); err != nil {
			return nil, 0, wrapDBError(err)
		}
		p.IsDefault, p.CreatedAt = def == 1, parseTime(created)
		out = append(out, p)
	}
	return out, total, wrapDBError(rows.Err())
}

// Idempotent is the stored answer to a request made with an Idempotency-Key.
type Idempotent struct {
	RequestHash string
	StatusCode  int
	Response    []byte
	Header      map[string][]string
}

// IdempotentAnswer returns the answer stored for (user, key).
func (tx *Tx) IdempotentAnswer(ctx context.Context, userID int64, key string) (Idempotent, bool, error) {
	var r Idempotent
	var resp, header string
	err := tx.queryRow(ctx, `SELECT request_hash, status_code, response, response_header FROM idempotency_keys WHERE user_id = ? AND idem_key = ?`, userID, key).
		Scan(&r.RequestHash, &r.StatusCode, &resp, &header)
	if errors.Is(err, sql.ErrNoRows) {
		return r, false, nil
	}
	if err == nil {
		err = json.Unmarshal([]byte(header), &r.Header)
	}
	r.Response = []byte(resp)
	return r, err == nil, wrapDBError(err)
}

// PutIdempotentAnswer stores the answer for (user, key).
func (tx *Tx) PutIdempotentAnswer(ctx context.Context, userID int64, key string, r Idempotent) error {
	header, _ := json.Marshal(r.Header)
	_, err := tx.exec(ctx, `INSERT INTO idempotency_keys (user_id, idem_key, request_hash, status_code, response, response_header, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		userID, key, r.RequestHash, r.StatusCode, string(r.Response), string(header), formatTime(tx.now))
	return err
}
