// Package service holds the rules of every API operation: who may do what, which requests are
// valid, and how an accepted request changes the store. It never talks HTTP and never calls a
// node: an accepted action is written to the store (desired state and action record in one
// transaction) and the reconciler carries it out.
//
// Every method checks its arguments fully before it writes anything, so a rejected request
// changes nothing.
package service

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"strings"

	"github.com/trainyard/trainyard"
	"github.com/trainyard/trainyard/config"
	"github.com/trainyard/trainyard/store"
)

// Observer reports the last observation of a cluster's nodes (kept by the reconciler), so that
// reads do not call the backend.
type Observer interface {
	Observed(clusterID int64) []trainyard.ObservedNode
}

// Service is the control plane's API surface without HTTP.
type Service struct {
	DB       *store.DB
	Config   *config.Config
	Backend  trainyard.Backend
	Observer Observer
	// Wake, if set, is called after an action is accepted, so the reconciler starts it at once.
	Wake func()
}

func (s *Service) wake() {
	if s.Wake != nil {
		s.Wake()
	}
}

func hashSecret(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])
}

func newSecret(prefix string) string {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		panic("service: no randomness: " + err.Error())
	}
	return prefix + hex.EncodeToString(b)
}

// Credentials are a newly issued key pair, shown once.
type Credentials struct {
	APIKey    string `json:"api_key"`
	AuthToken string `json:"auth_token"`
}

func (s *Service) issueKeys(ctx context.Context, tx *store.Tx, userID int64) (Credentials, error) {
	c := Credentials{APIKey: newSecret("tyk_"), AuthToken: newSecret("tyt_")}
	_, err := tx.CreateAPIKey(ctx, userID, hashSecret(c.APIKey), hashSecret(c.AuthToken))
	return c, err
}

// BootstrapResult is what `trainyard bootstrap` prints.
type BootstrapResult struct {
	AccountID int64 `json:"account_id"`
	UserID    int64 `json:"user_id"`
	ProjectID int64 `json:"project_id"`
	Credentials
}

// Bootstrap creates a user with an account, default project and key pair; for an existing
// user it issues a fresh key pair.
func (s *Service) Bootstrap(ctx context.Context, email, name string) (BootstrapResult, error) {
	email = strings.ToLower(strings.TrimSpace(email))
	if !validEmail(email) {
		return BootstrapResult{}, trainyard.FieldError("email", "%q is not an email address", email)
	}
	var r BootstrapResult
	err := s.DB.Write(ctx, func(ctx context.Context, tx *store.Tx) error {
		u, m, p, err := s.ensureUser(ctx, tx, email, name)
		if err != nil {
			return err
		}
		r.AccountID, r.UserID, r.ProjectID = m.AccountID, u.ID, p.ID
		r.Credentials, err = s.issueKeys(ctx, tx, u.ID)
		return err
	})
	return r, err
}

// ensureUser returns the user with email and their own membership and default project,
// creating all three when the user is new.
func (s *Service) ensureUser(ctx context.Context, tx *store.Tx, email, name string) (trainyard.User, trainyard.Membership, trainyard.Project, error) {
	u, ok, err := tx.UserByEmail(ctx, email)
	if err != nil {
		return u, trainyard.Membership{}, trainyard.Project{}, err
	}
	if ok {
		m, ok, err := tx.OwnMembership(ctx, u.ID)
		if err != nil || !ok {
			return u, m, trainyard.Project{}, trainyard.Errorf(trainyard.EINTERNAL, "user %s has no own account", email)
		}
		projects, _, err := tx.Projects(ctx, m.AccountID, store.Page{No: 1, PerPage: 1})
		if err != nil || len(projects) == 0 {
			return u, m, trainyard.Project{}, trainyard.Errorf(trainyard.EINTERNAL, "account of %s has no project", email)
		}
		return u, m, projects[0], nil
	}
	if name == "" {
		name, _, _ = strings.Cut(email, "@")
	}
	u, err = tx.CreateUser(ctx, name, email)
	if err != nil {
		return u, trainyard.Membership{}, trainyard.Project{}, err
	}
	m, p, err := tx.CreateAccount(ctx, u, name, "INR")
	return u, m, p, err
}

func validEmail(e string) bool {
	local, domain, ok := strings.Cut(e, "@")
	return ok && local != "" && strings.Contains(domain, ".") && !strings.ContainsAny(e, " \t\r\n<>\"") && len(e) <= 254
}

// GrantResult is what `trainyard iam grant` prints.
type GrantResult struct {
	IAMID  int64 `json:"iam_id"`
	UserID int64 `json:"user_id"`
	*Credentials
}

// GrantIAM gives the user with email userEmail access to the account of ownerEmail with role;
// a new user is created with an account of their own and gets a key pair. Granting again
// changes the role.
func (s *Service) GrantIAM(ctx context.Context, ownerEmail, userEmail, role string) (GrantResult, error) {
	ownerEmail = strings.ToLower(strings.TrimSpace(ownerEmail))
	userEmail = strings.ToLower(strings.TrimSpace(userEmail))
	if !trainyard.ValidIAMRole(role) {
		return GrantResult{}, trainyard.FieldError("role", "must be admin, member or viewer")
	}
	if !validEmail(userEmail) {
		return GrantResult{}, trainyard.FieldError("user", "%q is not an email address", userEmail)
	}
	var r GrantResult
	err := s.DB.Write(ctx, func(ctx context.Context, tx *store.Tx) error {
		owner, ok, err := tx.UserByEmail(ctx, ownerEmail)
		if err != nil {
			return err
		}
		if !ok {
			return trainyard.FieldError("owner", "no user %s (run trainyard bootstrap first)", ownerEmail)
		}
		own, _, err := tx.OwnMembership(ctx, owner.ID)
		if err != nil {
			return err
		}
		_, existed, err := tx.UserByEmail(ctx, userEmail)
		if err != nil {
			return err
		}
		u, _, _, err := s.ensureUser(ctx, tx, userEmail, "")
		if err != nil {
			return err
		}
		if u.ID == owner.ID {
			return trainyard.FieldError("user", "the owner already owns the account")
		}
		r.UserID = u.ID
		if !existed {
			c, err := s.issueKeys(ctx, tx, u.ID)
			if err != nil {
				return err
			}
			r.Credentials = &c
		}
		m, ok, err := tx.MembershipOf(ctx, own.AccountID, u.ID)
		if err != nil {
			return err
		}
		if ok {
			r.IAMID = m.ID
			return tx.SetMembershipRole(ctx, m.ID, role)
		}
		m, err = tx.CreateMembership(ctx, own.AccountID, u.ID, role)
		r.IAMID = m.ID
		return err
	})
	return r, err
}

// Authenticate checks a key pair and resolves the account the request acts in: the caller's own,
// or the one of the IAM entry activeIAM (0: none given). The token is compared in constant time
// against its stored hash.
func (s *Service) Authenticate(ctx context.Context, apiKey, token string, activeIAM int64) (trainyard.Caller, error) {
	unauthorized := trainyard.Errorf(trainyard.EUNAUTHORIZED, "Unauthorized: a valid apikey query parameter and Authorization: Bearer token are required")
	if apiKey == "" || token == "" {
		return trainyard.Caller{}, unauthorized
	}
	var c trainyard.Caller
	err := s.DB.Read(ctx, func(ctx context.Context, tx *store.Tx) error {
		k, ok, err := tx.APIKeyByHash(ctx, hashSecret(apiKey))
		if err != nil {
			return err
		}
		given := hashSecret(token)
		stored := k.TokenHash
		if !ok {
			stored = strings.Repeat("0", len(given)) // compare anyway: same work either way
		}
		if subtle.ConstantTimeCompare([]byte(given), []byte(stored)) != 1 || !ok || k.Revoked {
			return unauthorized
		}
		u, err := tx.User(ctx, k.UserID)
		if err != nil {
			return err
		}
		c.User, c.APIKeyID = u, k.ID
		if activeIAM == 0 {
			m, ok, err := tx.OwnMembership(ctx, u.ID)
			if err != nil {
				return err
			}
			if !ok {
				return unauthorized
			}
			c.Membership = m
			return nil
		}
		m, err := tx.Membership(ctx, activeIAM)
		if err != nil || m.UserID != u.ID {
			return trainyard.FieldError("active_iam", "no IAM account %d for this user (see GET /users/iam-accounts/)", activeIAM)
		}
		c.Membership = m
		return nil
	})
	return c, err
}

// Scope resolves the project and location of a project-scoped request.
func (s *Service) Scope(ctx context.Context, c trainyard.Caller, projectID int64, location string) (trainyard.Scope, error) {
	var p trainyard.Problems
	if !s.Config.ValidLocation(location) {
		p.Add("location", "must be one of %s", strings.Join(s.Config.Locations, ", "))
	}
	var proj trainyard.Project
	if err := s.DB.Read(ctx, func(ctx context.Context, tx *store.Tx) error {
		var ok bool
		var err error
		proj, ok, err = tx.Project(ctx, c.AccountID(), projectID)
		if err == nil && !ok {
			p.Add("project_id", "no project %d in this account", projectID)
		}
		return err
	}); err != nil {
		return trainyard.Scope{}, err
	}
	if err := p.Err(); err != nil {
		return trainyard.Scope{}, err
	}
	return trainyard.Scope{Caller: c, Project: proj, Location: location}, nil
}

// LocationOnly checks the location of a request that is account-scoped.
func (s *Service) LocationOnly(location string) error {
	if !s.Config.ValidLocation(location) {
		return trainyard.FieldError("location", "must be one of %s", strings.Join(s.Config.Locations, ", "))
	}
	return nil
}

func mustMutate(c trainyard.Caller) error {
	if !c.Membership.CanMutate() {
		return trainyard.Errorf(trainyard.EFORBIDDEN, "your role in this account (%s) may not make changes", c.Membership.Role)
	}
	return nil
}

// IAMAccounts lists the accounts the caller may act in.
func (s *Service) IAMAccounts(ctx context.Context, c trainyard.Caller) ([]trainyard.Membership, error) {
	var out []trainyard.Membership
	err := s.DB.Read(ctx, func(ctx context.Context, tx *store.Tx) error {
		var err error
		out, err = tx.MembershipsOfUser(ctx, c.User.ID)
		return err
	})
	return out, err
}

// Projects lists the projects of the caller's account.
func (s *Service) Projects(ctx context.Context, c trainyard.Caller, page store.Page) ([]trainyard.Project, int, error) {
	var out []trainyard.Project
	var total int
	err := s.DB.Read(ctx, func(ctx context.Context, tx *store.Tx) error {
		var err error
		out, total, err = tx.Projects(ctx, c.AccountID(), page)
		return err
	})
	return out, total, err
}

// CreateProject adds a project; owners and admins only.
func (s *Service) CreateProject(ctx context.Context, c trainyard.Caller, name string) (trainyard.Project, error) {
	if c.Membership.Role != trainyard.RoleOwner && c.Membership.Role != trainyard.RoleAdmin {
		return trainyard.Project{}, trainyard.Errorf(trainyard.EFORBIDDEN, "only the owner or an admin may create projects")
	}
	if err := trainyard.ValidateName(name); err != nil {
		return trainyard.Project{}, trainyard.FieldError("name", "%v", err)
	}
	var p trainyard.Project
	err := s.DB.Write(ctx, func(ctx context.Context, tx *store.Tx) error {
		var err error
		p, err = tx.CreateProject(ctx, c.AccountID(), name, false)
		return err
	})
	return p, err
}

// RevokeKey revokes the key pair of apiKey: from the next request on it is refused.
func (s *Service) RevokeKey(ctx context.Context, apiKey string) error {
	return s.DB.Write(ctx, func(ctx context.Context, tx *store.Tx) error {
		ok, err := tx.RevokeAPIKey(ctx, hashSecret(apiKey))
		if err == nil && !ok {
			return trainyard.FieldError("api_key", "no such active API key")
		}
		return err
	})
}

// RevokeUserKeys revokes every key pair of the user with email.
func (s *Service) RevokeUserKeys(ctx context.Context, email string) error {
	return s.DB.Write(ctx, func(ctx context.Context, tx *store.Tx) error {
		u, ok, err := tx.UserByEmail(ctx, strings.ToLower(strings.TrimSpace(email)))
		if err != nil {
			return err
		}
		if !ok {
			return trainyard.FieldError("email", "no user %s", email)
		}
		return tx.RevokeAPIKeys(ctx, u.ID)
	})
}

// Audit records a mutating call; failures are returned for the caller to log.
func (s *Service) Audit(ctx context.Context, c trainyard.Caller, method, path, operation string, status int) error {
	return s.DB.Write(ctx, func(ctx context.Context, tx *store.Tx) error {
		return tx.AddAudit(ctx, store.AuditEntry{AccountID: c.AccountID(), UserID: c.User.ID, ActiveIAM: c.Membership.ID,
			APIKeyID: c.APIKeyID, Method: method, Path: path, Operation: operation, Status: status})
	})
}

// AuditLog lists the account's audit log; owners and admins only.
func (s *Service) AuditLog(ctx context.Context, c trainyard.Caller, page store.Page) ([]store.AuditEntry, int, error) {
	if c.Membership.Role != trainyard.RoleOwner && c.Membership.Role != trainyard.RoleAdmin {
		return nil, 0, trainyard.Errorf(trainyard.EFORBIDDEN, "only the owner or an admin may read the audit log")
	}
	var out []store.AuditEntry
	var total int
	err := s.DB.Read(ctx, func(ctx context.Context, tx *store.Tx) error {
		var err error
		out, total, err = tx.AuditLog(ctx, c.AccountID(), page)
		return err
	})
	return out, total, err
}
