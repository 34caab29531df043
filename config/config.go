// Package config holds trainyard's catalog and limits: locations, images and their versions,
// SKUs with their plans, reserved-IP pools and caps. The defaults are embedded in the binary
// (default.json); a file of the same shape replaces them. Load validates everything it returns,
// so the rest of the program may trust a *Config.
package config

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"slices"

	"github.com/trainyard/trainyard"
)

//go:embed default.json
var defaultJSON []byte

// Config is the validated catalog and limits.
type Config struct {
	Locations          []string
	MaxNodesPerCluster int // workers a cluster may have in all
	MaxAdditionalNodes int // workers one scale_cluster may add
	ReservedIPPools    map[string]netip.Prefix
	Images             []Image
	SKUs               []trainyard.SKU
}

// Image is a catalog image with its versions.
type Image struct {
	ID       int64
	Name     string
	Versions []trainyard.ImageVersion
}

type fileImage struct {
	ImageID   int64  `json:"image_id"`
	Name      string `json:"name"`
	SlugName  string `json:"slug_name"`
	Framework string `json:"framework"`
	Internal  bool   `json:"is_internal"`
	Versions  []struct {
		ID          int64    `json:"image_version_id"`
		Version     string   `json:"version"`
		Description string   `json:"description"`
		Tags        []string `json:"tags"`
	} `json:"versions"`
}

type filePlan struct {
	ID            int64   `json:"sku_item_price_id"`
	SKUType       string  `json:"sku_type"`
	CommittedDays int     `json:"committed_days"`
	UnitPrice     float64 `json:"unit_price"`
	Currency      string  `json:"currency"`
	Location      string  `json:"location"`
	Description   string  `json:"description"`
}

type fileSKU struct {
	ID          int64      `json:"sku_id"`
	Name        string     `json:"name"`
	Series      string     `json:"series"`
	CPU         int        `json:"cpu"`
	GPU         int        `json:"gpu"`
	Memory      int        `json:"memory"`
	GPUMemory   int        `json:"gpu_memory"`
	GPUCardType string     `json:"gpu_card_type"`
	SKUType     string     `json:"sku_type"`
	IsFree      bool       `json:"is_free"`
	IsActive    bool       `json:"is_active"`
	Inventory   bool       `json:"is_inventory_available"`
	Plans       []filePlan `json:"plans"`
}

type file struct {
	Locations          []string          `json:"locations"`
	MaxNodesPerCluster int               `json:"max_nodes_per_cluster"`
	MaxAdditionalNodes int               `json:"max_additional_nodes"`
	ReservedIPPools    map[string]string `json:"reserved_ip_pools"`
	Images             []fileImage       `json:"images"`
	SKUs               []fileSKU         `json:"skus"`
}

// Default returns the embedded configuration.
func Default() *Config {
	c, err := Parse(defaultJSON)
	if err != nil {
		panic("config: embedded default.json is invalid: " + err.Error())
	}
	return c
}

// Load reads a configuration file; path "" means the embedded defaults.
func Load(path string) (*Config, error) {
	if path == "" {
		return Default(), nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	c, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// Parse decodes and validates a configuration document.
func Parse(b []byte) (*Config, error) {
	var f file
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	c := &Config{
		Locations:          f.Locations,
		MaxNodesPerCluster: f.MaxNodesPerCluster,
		MaxAdditionalNodes: f.MaxAdditionalNodes,
		ReservedIPPools:    map[string]netip.Prefix{},
	}
	if len(c.Locations) == 0 {
		return nil, fmt.Errorf("config: no locations")
	}
	if c.MaxNodesPerCluster < 1 || c.MaxAdditionalNodes < 1 {
		return nil, fmt.Errorf("config: max_nodes_per_cluster and max_additional_nodes must be at least 1")
	}
	for loc, s := range f.ReservedIPPools {
		if !slices.Contains(c.Locations, loc) {
			return nil, fmt.Errorf("config: reserved_ip_pools: unknown location %q", loc)
		}
		p, err := netip.ParsePrefix(s)
		if err != nil || !p.Addr().Is4() {
			return nil, fmt.Errorf("config: reserved_ip_pools[%s]: %q is not an IPv4 prefix", loc, s)
		}
		c.ReservedIPPools[loc] = p.Masked()
	}
	versionIDs := map[int64]bool{}
	for _, fi := range f.Images {
		img := Image{ID: fi.ImageID, Name: fi.Name}
		if fi.ImageID < 1 || fi.Name == "" {
			return nil, fmt.Errorf("config: image needs image_id and name")
		}
		for _, v := range fi.Versions {
			if v.ID < 1 || v.Version == "" || versionIDs[v.ID] {
				return nil, fmt.Errorf("config: image %q: version ids must be positive and unique, versions named", fi.Name)
			}
			versionIDs[v.ID] = true
			tags := v.Tags
			if tags == nil {
				tags = []string{}
			}
			img.Versions = append(img.Versions, trainyard.ImageVersion{
				ID: v.ID, ImageID: fi.ImageID, Name: fi.Name, Version: v.Version,
				Description: v.Description, Tags: tags, SlugName: fi.SlugName,
				Framework: fi.Framework, IsInternal: fi.Internal,
			})
		}
		c.Images = append(c.Images, img)
	}
	if len(versionIDs) == 0 {
		return nil, fmt.Errorf("config: no image versions")
	}
	planIDs := map[int64]bool{}
	for _, fs := range f.SKUs {
		if fs.ID < 1 || fs.Name == "" {
			return nil, fmt.Errorf("config: sku needs sku_id and name")
		}
		s := trainyard.SKU{
			ID: fs.ID, Name: fs.Name, Series: fs.Series, CPU: fs.CPU, GPU: fs.GPU, MemoryGB: fs.Memory,
			GPUMemoryGB: fs.GPUMemory, GPUCardType: fs.GPUCardType, SKUType: fs.SKUType,
			Category: "distributed_job", IsFree: fs.IsFree, IsActive: fs.IsActive, InventoryAvailable: fs.Inventory,
		}
		for _, p := range fs.Plans {
			if p.ID < 1 || planIDs[p.ID] || !slices.Contains(c.Locations, p.Location) {
				return nil, fmt.Errorf("config: sku %d: plan ids must be positive, unique and in a known location", fs.ID)
			}
			planIDs[p.ID] = true
			s.Plans = append(s.Plans, trainyard.Plan{
				ID: p.ID, SKUType: p.SKUType, CommittedDays: p.CommittedDays, UnitPrice: p.UnitPrice,
				Currency: p.Currency, Location: p.Location, Description: p.Description, IsActive: true,
			})
		}
		c.SKUs = append(c.SKUs, s)
	}
	if len(c.SKUs) == 0 {
		return nil, fmt.Errorf("config: no skus")
	}
	return c, nil
}

// ValidLocation reports whether loc is a configured location.
func (c *Config) ValidLocation(loc string) bool { return slices.Contains(c.Locations, loc) }

// ImageVersion finds a version by its image_version_id.
func (c *Config) ImageVersion(id int64) (trainyard.ImageVersion, bool) {
	for _, img := range c.Images {
		for _, v := range img.Versions {
			if v.ID == id {
				return v, true
			}
		}
	}
	return trainyard.ImageVersion{}, false
}

// SKU finds a SKU by id.
func (c *Config) SKU(id int64) (trainyard.SKU, bool) {
	for _, s := range c.SKUs {
		if s.ID == id {
			return s, true
		}
	}
	return trainyard.SKU{}, false
}

// Plan finds the plan sku_item_price_id of SKU skuID.
func (c *Config) Plan(skuID, planID int64) (trainyard.Plan, bool) {
	s, ok := c.SKU(skuID)
	if !ok {
		return trainyard.Plan{}, false
	}
	for _, p := range s.Plans {
		if p.ID == planID {
			return p, true
		}
	}
	return trainyard.Plan{}, false
}
