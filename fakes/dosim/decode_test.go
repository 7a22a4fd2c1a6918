package dosim

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestDecodeCreateDroplet(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		want    createDropletRequest
		wantErr string
	}{
		{
			name: "godo single with slug and null lists",
			body: `{"name":"web-1","region":"fra1","size":"s-1vcpu-1gb","image":"ubuntu-24-04-x64","ssh_keys":null,"backups":false,"ipv6":true,"private_networking":false,"monitoring":false,"tags":["genesis","genesis:ws:a","genesis"]}`,
			want: createDropletRequest{Names: []string{"web-1"}, Region: "fra1", Size: "s-1vcpu-1gb", ImageSlug: "ubuntu-24-04-x64", Tags: []string{"genesis", "genesis:ws:a"}, IPv6: true},
		},
		{
			name: "snapshot id as number",
			body: `{"name":"w","size":"s-1vcpu-1gb","image":170000001,"tags":null,"user_data":"#!/bin/sh"}`,
			want: createDropletRequest{Names: []string{"w"}, Size: "s-1vcpu-1gb", ImageID: 170000001, Tags: []string{}, UserData: "#!/bin/sh"},
		},
		{
			name: "numeric id as string",
			body: `{"name":"w","size":"s","image":"170000001"}`,
			want: createDropletRequest{Names: []string{"w"}, Size: "s", ImageID: 170000001, Tags: []string{}},
		},
		{
			name: "multi",
			body: `{"names":["a","b"],"size":"s","image":"x","ssh_keys":[1,"aa:bb"]}`,
			want: createDropletRequest{Names: []string{"a", "b"}, Size: "s", ImageSlug: "x", Tags: []string{}, multi: true},
		},
		{name: "both name and names", body: `{"name":"a","names":["b"],"size":"s","image":"x"}`, wantErr: "422 unprocessable_entity: specify either name or names, not both"},
		{name: "too many names", body: `{"names":["a","b","c","d","e","f","g","h","i","j","k"],"size":"s","image":"x"}`, wantErr: "422 unprocessable_entity: names: at most 10 droplets can be created at once, got 11"},
		{name: "no name", body: `{"size":"s","image":"x"}`, wantErr: "422 unprocessable_entity: name is required"},
		{name: "name ends with dash", body: `{"name":"a-","size":"s","image":"x"}`, wantErr: `422 unprocessable_entity: name "a-" is invalid`},
		{name: "negative image", body: `{"name":"a","size":"s","image":-3}`, wantErr: "422 unprocessable_entity: image: must be a slug or a positive integer image id, got -3"},
		{name: "image object", body: `{"name":"a","size":"s","image":{}}`, wantErr: "422 unprocessable_entity: image: must be a slug or a positive integer image id, got {}"},
		{name: "bad ssh key", body: `{"name":"a","size":"s","image":"x","ssh_keys":[true]}`, wantErr: "422 unprocessable_entity: ssh_keys[0]: must be a key id or a fingerprint"},
		{name: "tag with slash", body: `{"name":"a","size":"s","image":"x","tags":["a/b"]}`, wantErr: `422 unprocessable_entity: tags[0] "a/b" is invalid`},
		{name: "name not string", body: `{"name":7}`, wantErr: `422 unprocessable_entity: invalid value for "name": expected string, got number`},
		{name: "trailing data", body: `{"name":"a"} {}`, wantErr: "400 bad_request: malformed JSON body: trailing data after the object"},
		{name: "syntax", body: `{"name" "a"}`, wantErr: "400 bad_request: malformed JSON body: invalid character"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := decodeCreateDroplet([]byte(tc.body))
			if tc.wantErr != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tc.wantErr) {
					t.Fatalf("error = %v, want prefix %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(got, tc.want, cmp.AllowUnexported(createDropletRequest{})); diff != "" {
				t.Errorf("(-got +want):\n%s", diff)
			}
		})
	}
}

func TestValidTag(t *testing.T) {
	tests := []struct {
		tag  string
		want bool
	}{
		{"genesis", true},
		{"genesis:ws:abc-1_2", true},
		{"", false},
		{"a b", false},
		{"a/b", false},
		{"ü", false},
		{strings.Repeat("a", 255), true},
		{strings.Repeat("a", 256), false},
	}
	for _, tc := range tests {
		if got := validTag(tc.tag); got != tc.want {
			t.Errorf("validTag(%q) = %v, want %v", tc.tag, got, tc.want)
		}
	}
}

func TestWindowSlides(t *testing.T) {
	t0 := time.Unix(1_900_000_000, 0)
	w := &window{}
	type step struct {
		at          time.Duration
		allowed     bool
		remaining   int
		retryAfter  time.Duration
		resetOffset time.Duration // from t0
	}
	// 3 per minute, 5 per hour.
	steps := []step{
		{0, true, 4, 0, time.Hour},
		{time.Second, true, 3, 0, time.Hour},
		{2 * time.Second, true, 2, 0, time.Hour},
		{3 * time.Second, false, 2, 57 * time.Second, time.Hour},
		{60 * time.Second, true, 1, 0, time.Hour}, // t0 is exactly a minute old: no longer counts
		{61 * time.Second, true, 0, 0, time.Hour},
		{62 * time.Second, false, 0, time.Hour - 62*time.Second, time.Hour}, // the hour is full
		{63 * time.Second, false, 0, time.Hour - 63*time.Second, time.Hour},
		{time.Hour + time.Second, true, 1, 0, time.Hour + 2*time.Second},
	}
	var got, want []step
	for _, s := range steps {
		r := w.take(t0.Add(s.at), 3, 5)
		got = append(got, step{s.at, r.allowed, r.remaining, r.retryAfter, r.reset.Sub(t0)})
		want = append(want, s)
	}
	if diff := cmp.Diff(got, want, cmp.AllowUnexported(step{})); diff != "" {
		t.Errorf("(-got +want):\n%s", diff)
	}
}

func TestPageLinks(t *testing.T) {
	tests := []struct {
		query string
		total int
		want  map[string]string
		lo    int
		hi    int
	}{
		{"", 0, map[string]string{}, 0, 0},
		{"per_page=200", 200, map[string]string{}, 0, 200},
		{"per_page=500", 201, map[string]string{"next": "page=2&per_page=200", "last": "page=2&per_page=200"}, 0, 200},
		{"page=2&per_page=10&tag_name=a:b", 25, map[string]string{
			"first": "page=1&per_page=10&tag_name=a%3Ab", "prev": "page=1&per_page=10&tag_name=a%3Ab",
			"next": "page=3&per_page=10&tag_name=a%3Ab", "last": "page=3&per_page=10&tag_name=a%3Ab"}, 10, 20},
		{"page=9&per_page=10", 25, map[string]string{"first": "page=1&per_page=10", "prev": "page=3&per_page=10"}, 25, 25},
	}
	for _, tc := range tests {
		t.Run(tc.query, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/v2/droplets?"+tc.query, nil)
			p, err := parsePage(r.URL.Query())
			if err != nil {
				t.Fatal(err)
			}
			links := p.links(&request{base: "http://sim/"}, r, tc.total)["pages"].(map[string]string)
			got := map[string]string{}
			for k, v := range links {
				u, err := url.Parse(v)
				if err != nil || u.Scheme != "http" || u.Host != "sim" || u.Path != "/v2/droplets" {
					t.Errorf("%s link %q is not absolute", k, v)
				}
				got[k] = u.RawQuery
			}
			if diff := cmp.Diff(got, tc.want); diff != "" {
				t.Errorf("links (-got +want):\n%s", diff)
			}
			if lo, hi := p.bounds(tc.total); lo != tc.lo || hi != tc.hi {
				t.Errorf("bounds = %d,%d, want %d,%d", lo, hi, tc.lo, tc.hi)
			}
		})
	}
}

func TestAllocIPStaysOnLoopback(t *testing.T) {
	st := newState()
	seen := map[string]bool{}
	for range 1000 {
		ip := st.allocIP()
		if seen[ip] || !strings.HasPrefix(ip, "127.") || strings.HasSuffix(ip, ".0") || strings.HasSuffix(ip, ".255") {
			t.Fatalf("bad or repeated address %s", ip)
		}
		seen[ip] = true
	}
}

func FuzzDecodeCreateDroplet(f *testing.F) {
	for _, s := range []string{
		`{"name":"web-1","region":"fra1","size":"s-1vcpu-1gb","image":"ubuntu-24-04-x64","ssh_keys":null,"tags":["genesis:ws:a"]}`,
		`{"names":["a","b"],"size":"s","image":170000001,"user_data":"x"}`,
		`{"name":"a","size":"s","image":"1"}`,
		`{"name":"a","image":1e3}`,
		`{}`, `[]`, ``, `{"name":null}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := decodeCreateDroplet(body)
		if err != nil {
			if err.status != 400 && err.status != 422 {
				t.Fatalf("status %d", err.status)
			}
			return
		}
		if len(req.Names) == 0 || len(req.Names) > 10 || req.Size == "" {
			t.Fatalf("accepted %+v", req)
		}
		for _, n := range req.Names {
			if !dropletNameRE.MatchString(n) || len(n) > 255 {
				t.Fatalf("accepted name %q", n)
			}
		}
		if (req.ImageSlug == "") == (req.ImageID == 0) {
			t.Fatalf("image slug %q id %d", req.ImageSlug, req.ImageID)
		}
		for _, tag := range req.Tags {
			if !validTag(tag) {
				t.Fatalf("accepted tag %q", tag)
			}
		}
		if len(req.UserData) > MaxUserData {
			t.Fatal("accepted oversized user data")
		}
	})
}

func FuzzDecodeAction(f *testing.F) {
	for _, s := range []string{`{"type":"power_off"}`, `{"type":"snapshot","name":"n"}`, `{"type":"resize"}`, `{"type":1}`, `{}`, `{"type":"reboot","name":"x"}`, `{"type":"rename","name":"genesis-ws-a-2"}`, `{"type":"rename"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := decodeAction(body)
		if err != nil {
			if err.status != 400 && err.status != 422 {
				t.Fatalf("status %d", err.status)
			}
			return
		}
		if !supportedActionTypes[req.Type] || (req.Name != "" && req.Type != "snapshot" && req.Type != "rename") || (req.Type == "rename" && req.Name == "") {
			t.Fatalf("accepted %+v", req)
		}
	})
}

func FuzzDecodeFault(f *testing.F) {
	for _, s := range []string{
		`{"kind":"error","status":503,"count":2,"route":"GET /v2/droplets"}`,
		`{"kind":"timeout","hold":"1s"}`,
		`{"kind":"partial_list","ok_pages":2,"truncate":true,"route":"* /v2/droplets/*"}`,
		`{"kind":"action_error","account":"a","retry_after":3}`,
		`{"kind":"error","route":"[","hold":1.5}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		fl, err := decodeFault(body)
		if err != nil {
			return
		}
		if fl.Count < 1 || fl.Status < 400 || fl.Status > 599 || fl.Hold < 0 || fl.OKPages < 0 {
			t.Fatalf("accepted %+v", fl)
		}
		fl.matches("GET", "/v2/droplets", "a") // must not panic
	})
}

func FuzzDecodeTagResources(f *testing.F) {
	for _, s := range []string{`{"resources":[{"resource_id":"12","resource_type":"droplet"}]}`, `{"resources":[]}`, `{}`,
		`{"resources":[{"resource_id":"x","resource_type":"droplet"}]}`, `{"resources":[{"resource_id":"1","resource_type":"volume"}]}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		ids, err := decodeTagResources(body)
		if err != nil {
			if err.status != 400 && err.status != 422 {
				t.Fatalf("status %d", err.status)
			}
			return
		}
		if len(ids) == 0 {
			t.Fatal("accepted no resources")
		}
		for _, id := range ids {
			if id <= 0 {
				t.Fatalf("accepted droplet id %d", id)
			}
		}
	})
}
