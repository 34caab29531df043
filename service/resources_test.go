package service

import (
	"net/netip"
	"strings"
	"testing"
)

func TestParsePublicKey(t *testing.T) {
	norm, fp, err := ParsePublicKey("  ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAw827B+Zw6jHSytt7LG0pJTEPQdLkzcHq/Ko0N+0EaF  me@host \n")
	if err != nil || norm != "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAw827B+Zw6jHSytt7LG0pJTEPQdLkzcHq/Ko0N+0EaF me@host" || !strings.HasPrefix(fp, "SHA256:") {
		t.Errorf("got %q %q %v", norm, fp, err)
	}
	for _, bad := range []string{"", "ssh-ed25519", "ssh-rsa AAAA", "no-pty ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAw827B+Zw6jHSytt7LG0pJTEPQdLkzcHq/Ko0N+0EaF"} {
		if _, _, err := ParsePublicKey(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestFirstFree(t *testing.T) {
	pool := netip.MustParsePrefix("203.0.113.0/30") // .1 and .2 usable
	a, ok := firstFree(pool, map[string]bool{})
	if !ok || a.String() != "203.0.113.1" {
		t.Errorf("first: %v %v", a, ok)
	}
	a, ok = firstFree(pool, map[string]bool{"203.0.113.1": true})
	if !ok || a.String() != "203.0.113.2" {
		t.Errorf("second: %v %v", a, ok)
	}
	if _, ok := firstFree(pool, map[string]bool{"203.0.113.1": true, "203.0.113.2": true}); ok {
		t.Error("the broadcast address was handed out")
	}
}
