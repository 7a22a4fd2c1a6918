package schema

import (
	"reflect"
	"strings"
	"testing"
	"unsafe"
)

// TestShareFrom: a tenant decoded again after an edit uses the previous
// version's memory for what the edit left alone, and only for that; its
// values are those of a decode of the edited file on its own.
func TestShareFrom(t *testing.T) {
	full := string(mustRead(t, "testdata/tenants/ws-full.good.yaml"))
	decode := func(data string) *Tenant {
		t.Helper()
		tn, errs := DecodeTenant("tenants/ws-full.yaml", []byte(data))
		if errs != nil {
			t.Fatal(errs)
		}
		return tn
	}
	labelled := strings.Replace(full, "  tier: enterprise\n", "  tier: enterprise\n  labels: {wave: canary}\n", 1)
	old := decode(labelled)
	// The edit: a new name, the second credential sealed again, the
	// first workflow's params changed; labels, idle policy, domains, the
	// first sealed value and the first workflow's credentials untouched.
	resealed := strings.Replace(labelled, "5m2qBZz+MbBl75f559", "5m2qBZy+MbBl75f559", 1)
	edited := strings.NewReplacer("name: Full Corp", "name: Full Corporation", "senderName: Full Sales", "senderName: Sales").Replace(resealed)
	if edited == labelled {
		t.Fatal("the edit changed nothing")
	}
	got, want := decode(edited), decode(edited)
	got.ShareFrom(old)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("ShareFrom changed values:\n got %+v\nwant %+v", got, want)
	}

	sameMapMem := func(a, b map[string]string) bool {
		return reflect.ValueOf(a).UnsafePointer() == reflect.ValueOf(b).UnsafePointer()
	}
	sameStr := func(a, b string) bool { return unsafe.StringData(a) == unsafe.StringData(b) }
	for _, c := range []struct {
		what        string
		shared, was bool
	}{
		{"labels", sameMapMem(got.Metadata.Labels, old.Metadata.Labels), true},
		{"hibernation", got.Spec.Hibernation == old.Spec.Hibernation, true},
		{"domains", unsafe.SliceData(got.Spec.Domains) == unsafe.SliceData(old.Spec.Domains), true},
		{"the unchanged sealed value", sameStr(got.Spec.Credentials[0].Sealed, old.Spec.Credentials[0].Sealed), true},
		{"the resealed value", sameStr(got.Spec.Credentials[1].Sealed, old.Spec.Credentials[1].Sealed), false},
		{"the credentials (one changed)", unsafe.SliceData(got.Spec.Credentials) == unsafe.SliceData(old.Spec.Credentials), false},
		{"the first workflow's credentials", sameMapMem(got.Spec.Workflows[0].Credentials, old.Spec.Workflows[0].Credentials), true},
		{"the first workflow's changed params", sameMapMem(got.Spec.Workflows[0].Params, old.Spec.Workflows[0].Params), false},
		{"the workflows (one changed)", unsafe.SliceData(got.Spec.Workflows) == unsafe.SliceData(old.Spec.Workflows), false},
		{"a fresh decode's labels", sameMapMem(want.Metadata.Labels, old.Metadata.Labels), false},
	} {
		if c.shared != c.was {
			t.Errorf("%s: shared %v, want %v", c.what, c.shared, c.was)
		}
	}

	// Unchanged: the whole lists are shared. An empty map where there was
	// none stays the decode's own (values, and so JSON, are kept exact).
	again := decode(labelled)
	again.ShareFrom(old)
	if unsafe.SliceData(again.Spec.Credentials) != unsafe.SliceData(old.Spec.Credentials) || unsafe.SliceData(again.Spec.Workflows) != unsafe.SliceData(old.Spec.Workflows) {
		t.Error("an unchanged tenant does not share its credentials and workflows")
	}
	noLabels := decode(full)
	empty := decode(strings.Replace(full, "  tier: enterprise\n", "  tier: enterprise\n  labels: {}\n", 1))
	empty.ShareFrom(noLabels)
	if empty.Metadata.Labels == nil {
		t.Error("an empty labels map became nil")
	}
	var none *Tenant
	none.ShareFrom(old) // no panic
	again.ShareFrom(nil)
}
