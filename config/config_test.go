package config

import (
	"strings"
	"testing"
)

func TestDefaultIsValid(t *testing.T) {
	c := Default()
	if !c.ValidLocation("Delhi") || c.ValidLocation("Mars") {
		t.Error("locations")
	}
	if v, ok := c.ImageVersion(2); !ok || v.Name != "Ubuntu Slurm" {
		t.Errorf("image version 2: %+v", v)
	}
	if p, ok := c.Plan(309, 3416); !ok || p.Location != "Delhi" {
		t.Errorf("plan 3416: %+v", p)
	}
	if _, ok := c.Plan(309, 1201); ok {
		t.Error("a plan of another SKU was found")
	}
}

func TestParseRefusesBadConfigs(t *testing.T) {
	for name, doc := range map[string]string{
		"not json":         "{",
		"no locations":     `{"locations":[]}`,
		"bad pool":         `{"locations":["A"],"max_nodes_per_cluster":1,"max_additional_nodes":1,"reserved_ip_pools":{"A":"nope"}}`,
		"pool elsewhere":   `{"locations":["A"],"max_nodes_per_cluster":1,"max_additional_nodes":1,"reserved_ip_pools":{"B":"203.0.113.0/24"}}`,
		"no images":        `{"locations":["A"],"max_nodes_per_cluster":1,"max_additional_nodes":1}`,
		"duplicate images": `{"locations":["A"],"max_nodes_per_cluster":1,"max_additional_nodes":1,"images":[{"image_id":1,"name":"x","versions":[{"image_version_id":1,"version":"a"},{"image_version_id":1,"version":"b"}]}]}`,
	} {
		if _, err := Parse([]byte(doc)); err == nil || !strings.HasPrefix(err.Error(), "config:") {
			t.Errorf("%s: %v", name, err)
		}
	}
}
