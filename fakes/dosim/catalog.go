package dosim

import (
	"slices"
	"sort"
)

// regionInfo describes one DigitalOcean region the simulator accepts.
type regionInfo struct {
	Slug string
	Name string
}

// sizeInfo describes one droplet size (plan) the simulator accepts.
type sizeInfo struct {
	Slug         string
	Memory       int // MiB
	VCPUs        int
	Disk         int // GiB
	Transfer     float64
	PriceMonthly float64
	PriceHourly  float64
	Description  string
}

// baseImage is a public distribution image that can be named by slug or id.
type baseImage struct {
	ID           int
	Slug         string
	Name         string
	Distribution string
	MinDiskSize  int
	SizeGB       float64
}

// The catalog mirrors a slice of DigitalOcean's real regions, sizes and
// public images. Region slugs are the ones the OpenAPI description allows in
// an image's regions list.
var (
	catalogRegions = []regionInfo{
		{"ams3", "Amsterdam 3"},
		{"blr1", "Bangalore 1"},
		{"fra1", "Frankfurt 1"},
		{"lon1", "London 1"},
		{"nyc1", "New York 1"},
		{"nyc3", "New York 3"},
		{"sfo2", "San Francisco 2"},
		{"sfo3", "San Francisco 3"},
		{"sgp1", "Singapore 1"},
		{"syd1", "Sydney 1"},
		{"tor1", "Toronto 1"},
	}
	catalogSizes = []sizeInfo{
		{"s-1vcpu-512mb-10gb", 512, 1, 10, 0.5, 4, 0.00595, "Basic"},
		{"s-1vcpu-1gb", 1024, 1, 25, 1, 6, 0.00893, "Basic"},
		{"s-1vcpu-2gb", 2048, 1, 50, 2, 12, 0.01786, "Basic"},
		{"s-2vcpu-2gb", 2048, 2, 60, 3, 18, 0.02679, "Basic"},
		{"s-2vcpu-4gb", 4096, 2, 80, 4, 24, 0.03571, "Basic"},
		{"s-4vcpu-8gb", 8192, 4, 160, 5, 48, 0.07143, "Basic"},
		{"s-8vcpu-16gb", 16384, 8, 320, 6, 96, 0.14286, "Basic"},
		{"g-2vcpu-8gb", 8192, 2, 25, 4, 63, 0.09375, "General Purpose"},
		{"c-2", 4096, 2, 25, 4, 42, 0.0625, "CPU-Optimized"},
	}
	catalogImages = []baseImage{
		{129211873, "ubuntu-22-04-x64", "22.04 (LTS) x64", "Ubuntu", 7, 2.37},
		{163000001, "ubuntu-24-04-x64", "24.04 (LTS) x64", "Ubuntu", 7, 2.5},
		{112929454, "ubuntu-20-04-x64", "20.04 (LTS) x64", "Ubuntu", 7, 2.36},
		{135000002, "debian-12-x64", "12 x64", "Debian", 7, 1.1},
		{106569146, "debian-11-x64", "11 x64", "Debian", 7, 1.0},
		{140000003, "rockylinux-9-x64", "9 x64", "Rocky Linux", 10, 1.5},
		{150000004, "fedora-40-x64", "40 x64", "Fedora", 10, 1.6},
		{161000005, "docker-20-04", "Docker on Ubuntu 22.04", "Ubuntu", 25, 3.4},
	}
)

func findRegion(slug string) (regionInfo, bool) {
	return first(catalogRegions, func(r regionInfo) bool { return r.Slug == slug })
}

func findSize(slug string) (sizeInfo, bool) {
	return first(catalogSizes, func(s sizeInfo) bool { return s.Slug == slug })
}

func findImageBySlug(slug string) (baseImage, bool) {
	return first(catalogImages, func(i baseImage) bool { return i.Slug == slug })
}

func findImageByID(id int) (baseImage, bool) {
	return first(catalogImages, func(i baseImage) bool { return i.ID == id })
}

// first is the first entry of a catalog list that match accepts.
func first[T any](list []T, match func(T) bool) (T, bool) {
	if i := slices.IndexFunc(list, match); i >= 0 {
		return list[i], true
	}
	var none T
	return none, false
}

func regionSlugs() []string {
	out := make([]string, len(catalogRegions))
	for i, r := range catalogRegions {
		out[i] = r.Slug
	}
	sort.Strings(out)
	return out
}

func sizeSlugs() []string {
	out := make([]string, len(catalogSizes))
	for i, s := range catalogSizes {
		out[i] = s.Slug
	}
	return out
}
