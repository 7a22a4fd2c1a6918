package schema

import (
	"maps"
	"slices"
)

// ShareFrom makes t, a tenant just decoded, use old's copies of the parts
// that are equal in both: the labels, the idle policy, the domains, the
// credentials (or, one by one, their sealed values) and the workflows (or,
// one by one, their maps). Values do not change, only which memory holds
// them. It is for a replica that decodes a tenant again after its file was
// edited while the previous version is still held (by the previous
// Snapshot, until every reader has moved on): the new version then costs
// what the edit changed, not a second copy of the tenant. A commit that
// edits every file (labelling the fleet into rollout waves, say) needs
// that to stay within one decoded fleet plus the edit.
//
// t must not be read by anyone else yet; both are read-only afterwards, as
// every decoded tenant is. A nil t or old does nothing.
func (t *Tenant) ShareFrom(old *Tenant) {
	if t == nil || old == nil || t == old {
		return
	}
	if sameMap(t.Metadata.Labels, old.Metadata.Labels) {
		t.Metadata.Labels = old.Metadata.Labels
	}
	if h, o := t.Spec.Hibernation, old.Spec.Hibernation; h != nil && o != nil && *h == *o {
		t.Spec.Hibernation = o
	}
	if sameSlice(t.Spec.Domains, old.Spec.Domains) {
		t.Spec.Domains = old.Spec.Domains
	}

	if sameSlice(t.Spec.Credentials, old.Spec.Credentials) {
		t.Spec.Credentials = old.Spec.Credentials
	} else {
		// A sealed value is most of a credential's bytes; one that did
		// not change is found by value wherever it moved to.
		for i := range t.Spec.Credentials {
			c := &t.Spec.Credentials[i]
			for _, oc := range old.Spec.Credentials {
				if oc.Sealed == c.Sealed {
					c.Sealed = oc.Sealed
					break
				}
			}
		}
	}

	if (t.Spec.Workflows == nil) == (old.Spec.Workflows == nil) && slices.EqualFunc(t.Spec.Workflows, old.Spec.Workflows, sameWorkflow) {
		t.Spec.Workflows = old.Spec.Workflows
	} else {
		for i := range t.Spec.Workflows {
			w := &t.Spec.Workflows[i]
			for _, ow := range old.Spec.Workflows {
				if sameMap(w.Credentials, ow.Credentials) {
					w.Credentials = ow.Credentials
				}
				if sameMap(w.Params, ow.Params) {
					w.Params = ow.Params
				}
			}
		}
	}
}

// sameMap reports whether a and b hold the same entries and are both nil
// or both not (a decoded empty map and an absent one stay as decoded).
func sameMap(a, b map[string]string) bool {
	return (a == nil) == (b == nil) && maps.Equal(a, b)
}

// sameSlice is sameMap for slices.
func sameSlice[E comparable](a, b []E) bool {
	return (a == nil) == (b == nil) && slices.Equal(a, b)
}

func sameWorkflow(a, b Workflow) bool {
	return a.Template == b.Template && sameMap(a.Credentials, b.Credentials) && sameMap(a.Params, b.Params)
}
