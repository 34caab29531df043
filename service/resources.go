package service

import (
	"context"
	"fmt"
	"net/netip"
	"strings"

	"golang.org/x/crypto/ssh"

	"github.com/trainyard/trainyard"
	"github.com/trainyard/trainyard/store"
)

// maxKeyLen bounds an authorized_keys line; the largest real keys (RSA 16384) are well below.
const maxKeyLen = 16 * 1024

// ParsePublicKey checks that s is one OpenSSH public key ("type base64 [comment]", no options,
// one line) and returns it normalised with its SHA256 fingerprint. Keys are written to nodes, so
// anything else (options such as command=, several lines, control characters) is refused.
func ParsePublicKey(s string) (normalized, fingerprint string, err error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return "", "", fmt.Errorf("is required")
	}
	if len(s) > maxKeyLen {
		return "", "", fmt.Errorf("is longer than %d bytes", maxKeyLen)
	}
	if strings.ContainsAny(s, "\r\n\x00") {
		return "", "", fmt.Errorf("must be a single line")
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return "", "", fmt.Errorf("contains control characters")
		}
	}
	pub, comment, options, rest, err := ssh.ParseAuthorizedKey([]byte(s))
	if err != nil {
		return "", "", fmt.Errorf("is not a valid OpenSSH public key")
	}
	if len(options) > 0 || len(rest) > 0 {
		return "", "", fmt.Errorf("must be a bare public key without options")
	}
	out := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub)))
	if comment != "" {
		out += " " + comment
	}
	return out, ssh.FingerprintSHA256(pub), nil
}

// CreateSSHKey adds a key to the caller's account.
func (s *Service) CreateSSHKey(ctx context.Context, c trainyard.Caller, label, key string) (trainyard.SSHKey, error) {
	if err := mustMutate(c); err != nil {
		return trainyard.SSHKey{}, err
	}
	var p trainyard.Problems
	label = strings.TrimSpace(label)
	if label == "" || len(label) > 100 || strings.ContainsAny(label, "\r\n\x00") {
		p.Add("label", "must be 1 to 100 characters on one line")
	}
	norm, fp, err := ParsePublicKey(key)
	if err != nil {
		p.Add("ssh_key", "%v", err)
	}
	if err := p.Err(); err != nil {
		return trainyard.SSHKey{}, err
	}
	var k trainyard.SSHKey
	err = s.DB.Write(ctx, func(ctx context.Context, tx *store.Tx) error {
		var err error
		k, err = tx.CreateSSHKey(ctx, trainyard.SSHKey{AccountID: c.AccountID(), Label: label, PublicKey: norm, Fingerprint: fp})
		return err
	})
	return k, err
}

// SSHKeys lists the caller's keys.
func (s *Service) SSHKeys(ctx context.Context, c trainyard.Caller, page store.Page) ([]trainyard.SSHKey, int, error) {
	var out []trainyard.SSHKey
	var total int
	err := s.DB.Read(ctx, func(ctx context.Context, tx *store.Tx) error {
		var err error
		out, total, err = tx.SSHKeys(ctx, c.AccountID(), page)
		return err
	})
	return out, total, err
}

// DeleteSSHKey removes a key from the library. Clusters keep their copy: removing a key from a
// cluster is update_ssh_keys.
func (s *Service) DeleteSSHKey(ctx context.Context, c trainyard.Caller, id int64) error {
	if err := mustMutate(c); err != nil {
		return err
	}
	return s.DB.Write(ctx, func(ctx context.Context, tx *store.Tx) error {
		_, ok, err := tx.SSHKey(ctx, c.AccountID(), id)
		if err != nil {
			return err
		}
		if !ok {
			return trainyard.Errorf(trainyard.ENOTFOUND, "no SSH key %d", id)
		}
		return tx.DeleteSSHKey(ctx, c.AccountID(), id)
	})
}

// ReserveIP allocates the lowest free address of the location's pool to the project.
func (s *Service) ReserveIP(ctx context.Context, sc trainyard.Scope) (trainyard.ReservedIP, error) {
	if err := mustMutate(sc.Caller); err != nil {
		return trainyard.ReservedIP{}, err
	}
	pool, ok := s.Config.ReservedIPPools[sc.Location]
	if !ok {
		return trainyard.ReservedIP{}, trainyard.FieldError("location", "no reserved IPs are offered in %s", sc.Location)
	}
	var ip trainyard.ReservedIP
	err := s.DB.Write(ctx, func(ctx context.Context, tx *store.Tx) error {
		used, err := tx.ReservedAddresses(ctx, sc.Location)
		if err != nil {
			return err
		}
		addr, ok := firstFree(pool, used)
		if !ok {
			return trainyard.Errorf(trainyard.ECONFLICT, "every address of the %s pool (%s) is reserved", sc.Location, pool)
		}
		ip, err = tx.CreateReservedIP(ctx, trainyard.ReservedIP{AccountID: sc.Caller.AccountID(), ProjectID: sc.Project.ID,
			Location: sc.Location, Address: addr.String(), ReservedBy: sc.Caller.User})
		return err
	})
	return ip, err
}

// firstFree returns the lowest host address of pool (not its network or broadcast address)
// that is not in used.
func firstFree(pool netip.Prefix, used map[string]bool) (netip.Addr, bool) {
	first := pool.Masked().Addr()
	for a := first.Next(); a.IsValid() && pool.Contains(a); a = a.Next() {
		if !pool.Contains(a.Next()) { // the broadcast address
			break
		}
		if !used[a.String()] {
			return a, true
		}
	}
	return netip.Addr{}, false
}

// ReservedIPs lists the project's reserved IPs in the location.
func (s *Service) ReservedIPs(ctx context.Context, sc trainyard.Scope, page store.Page) ([]trainyard.ReservedIP, int, error) {
	var out []trainyard.ReservedIP
	var total int
	err := s.DB.Read(ctx, func(ctx context.Context, tx *store.Tx) error {
		var err error
		out, total, err = tx.ReservedIPs(ctx, sc.Caller.AccountID(), sc.Project.ID, sc.Location, page)
		return err
	})
	return out, total, err
}

// reservedIPInScope finds a reserved IP of the scope's project and location.
func reservedIPInScope(ctx context.Context, tx *store.Tx, sc trainyard.Scope, id int64) (trainyard.ReservedIP, bool, error) {
	ip, ok, err := tx.ReservedIP(ctx, sc.Caller.AccountID(), id)
	if err != nil || !ok || ip.ProjectID != sc.Project.ID {
		return ip, false, err
	}
	return ip, true, nil
}

// ReleaseIP returns a reserved IP to the pool; an attached IP must be detached first.
func (s *Service) ReleaseIP(ctx context.Context, sc trainyard.Scope, id int64) error {
	if err := mustMutate(sc.Caller); err != nil {
		return err
	}
	return s.DB.Write(ctx, func(ctx context.Context, tx *store.Tx) error {
		ip, ok, err := reservedIPInScope(ctx, tx, sc, id)
		if err != nil {
			return err
		}
		if !ok || ip.Location != sc.Location {
			return trainyard.Errorf(trainyard.ENOTFOUND, "no reserved IP %d in this project and location", id)
		}
		if ip.Status == trainyard.IPAttached {
			return trainyard.Errorf(trainyard.ECONFLICT, "reserved IP %s is attached to cluster %d: detach it first", ip.Address, ip.ClusterID)
		}
		return tx.DeleteReservedIP(ctx, id)
	})
}

// SecurityGroupRequest is the body of a security group create.
type SecurityGroupRequest struct {
	Name        string
	Description string
	Rules       []trainyard.SecurityRule
}

func validateRules(rules []trainyard.SecurityRule, p *trainyard.Problems) {
	if len(rules) > 100 {
		p.Add("rules", "at most 100 rules")
		return
	}
	for i := range rules {
		rules[i].ID = int64(i + 1)
		trainyard.NormalizeRule(&rules[i], fmt.Sprintf("rules[%d]", i), p)
	}
}

// CreateSecurityGroup adds a group to the project in the location.
func (s *Service) CreateSecurityGroup(ctx context.Context, sc trainyard.Scope, req SecurityGroupRequest) (trainyard.SecurityGroup, error) {
	if err := mustMutate(sc.Caller); err != nil {
		return trainyard.SecurityGroup{}, err
	}
	var p trainyard.Problems
	if err := trainyard.ValidateName(req.Name); err != nil {
		p.Add("name", "%v", err)
	}
	if len(req.Description) > 255 {
		p.Add("description", "must be at most 255 characters")
	}
	if req.Rules == nil {
		req.Rules = []trainyard.SecurityRule{}
	}
	validateRules(req.Rules, &p)
	if err := p.Err(); err != nil {
		return trainyard.SecurityGroup{}, err
	}
	var g trainyard.SecurityGroup
	err := s.DB.Write(ctx, func(ctx context.Context, tx *store.Tx) error {
		var err error
		g, err = tx.CreateSecurityGroup(ctx, trainyard.SecurityGroup{AccountID: sc.Caller.AccountID(), ProjectID: sc.Project.ID,
			Location: sc.Location, Name: req.Name, Description: req.Description, Rules: req.Rules})
		return err
	})
	return g, err
}

// SecurityGroups lists the groups of the project in the location.
func (s *Service) SecurityGroups(ctx context.Context, sc trainyard.Scope, page store.Page) ([]trainyard.SecurityGroup, int, error) {
	var out []trainyard.SecurityGroup
	var total int
	err := s.DB.Read(ctx, func(ctx context.Context, tx *store.Tx) error {
		var err error
		out, total, err = tx.SecurityGroups(ctx, sc.Caller.AccountID(), sc.Project.ID, sc.Location, page)
		return err
	})
	return out, total, err
}

func groupInScope(ctx context.Context, tx *store.Tx, sc trainyard.Scope, id int64) (trainyard.SecurityGroup, error) {
	g, ok, err := tx.SecurityGroup(ctx, sc.Caller.AccountID(), sc.Project.ID, sc.Location, id)
	if err != nil {
		return g, err
	}
	if !ok {
		return g, trainyard.Errorf(trainyard.ENOTFOUND, "no security group %d in this project and location", id)
	}
	return g, nil
}

// SecurityGroup returns one group.
func (s *Service) SecurityGroup(ctx context.Context, sc trainyard.Scope, id int64) (trainyard.SecurityGroup, error) {
	var g trainyard.SecurityGroup
	err := s.DB.Read(ctx, func(ctx context.Context, tx *store.Tx) error {
		var err error
		g, err = groupInScope(ctx, tx, sc, id)
		return err
	})
	return g, err
}

// DeleteSecurityGroup removes a group that no cluster uses.
func (s *Service) DeleteSecurityGroup(ctx context.Context, sc trainyard.Scope, id int64) error {
	if err := mustMutate(sc.Caller); err != nil {
		return err
	}
	return s.DB.Write(ctx, func(ctx context.Context, tx *store.Tx) error {
		if _, err := groupInScope(ctx, tx, sc, id); err != nil {
			return err
		}
		users, err := tx.ClustersUsingSecurityGroup(ctx, id)
		if err != nil {
			return err
		}
		if len(users) > 0 {
			return trainyard.Errorf(trainyard.ECONFLICT, "security group %d is applied to cluster(s) %v: remove it from them first", id, users)
		}
		return tx.DeleteSecurityGroup(ctx, id)
	})
}

// SetSecurityGroupRules replaces a group's rules. Clusters that use the group get a new network
// generation, which the reconciler applies to their nodes.
func (s *Service) SetSecurityGroupRules(ctx context.Context, sc trainyard.Scope, id int64, rules []trainyard.SecurityRule) (trainyard.SecurityGroup, error) {
	if err := mustMutate(sc.Caller); err != nil {
		return trainyard.SecurityGroup{}, err
	}
	var p trainyard.Problems
	if rules == nil {
		rules = []trainyard.SecurityRule{}
	}
	validateRules(rules, &p)
	if err := p.Err(); err != nil {
		return trainyard.SecurityGroup{}, err
	}
	var g trainyard.SecurityGroup
	err := s.DB.Write(ctx, func(ctx context.Context, tx *store.Tx) error {
		var err error
		if g, err = groupInScope(ctx, tx, sc, id); err != nil {
			return err
		}
		if err := tx.SetSecurityGroupRules(ctx, id, rules); err != nil {
			return err
		}
		g.Rules = rules
		users, err := tx.ClustersUsingSecurityGroup(ctx, id)
		if err != nil {
			return err
		}
		for _, cid := range users {
			c, err := tx.Cluster(ctx, cid)
			if err != nil {
				return err
			}
			c.NetworkGen++
			if err := tx.UpdateCluster(ctx, c); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		s.wake()
	}
	return g, err
}
