package converge

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"genesis.dev/fleet/agent/n8n"
	"genesis.dev/fleet/schema"
)

// placeholderRE matches a credential placeholder of a golden template.
var placeholderRE = regexp.MustCompile(`TEMPLATE_[A-Z0-9_]+_UUID`)

// PlaceholderFor is the placeholder a template uses for the credential
// named name when several credentials share a type: TEMPLATE_<NAME>_UUID,
// NAME upper-cased with '-' → '_'.
func PlaceholderFor(name string) string {
	return "TEMPLATE_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_")) + "_UUID"
}

// desiredWorkflow is one manifest workflow as it will be sent to n8n.
type desiredWorkflow struct {
	name string // manifest name (the template)
	spec n8n.WorkflowSpec
	hash string // SHA-256 of the body sent
	uses []string
}

// renderWorkflow replaces the credential placeholders of a manifest
// workflow with n8n ids (ids: credential name → n8n id) and returns what to
// send. Pure.
func renderWorkflow(w schema.ManifestWorkflow, creds []schema.ManifestCredential, ids map[string]string) (desiredWorkflow, error) {
	var doc struct {
		Name  string `json:"name"`
		Nodes []struct {
			Name        string `json:"name"`
			Credentials map[string]struct {
				ID string `json:"id"`
			} `json:"credentials"`
		} `json:"nodes"`
	}
	if err := json.Unmarshal(w.JSON, &doc); err != nil {
		return desiredWorkflow{}, fmt.Errorf("workflow %s: %w", w.Name, err)
	}
	repl := map[string]string{} // placeholder → credential name
	for _, nd := range doc.Nodes {
		for typ, ref := range nd.Credentials {
			if !placeholderRE.MatchString(ref.ID) || placeholderRE.FindString(ref.ID) != ref.ID {
				continue
			}
			name, err := credentialFor(ref.ID, typ, creds)
			if err != nil {
				return desiredWorkflow{}, fmt.Errorf("workflow %s: node %q: %w", w.Name, nd.Name, err)
			}
			if prev, ok := repl[ref.ID]; ok && prev != name {
				return desiredWorkflow{}, fmt.Errorf("workflow %s: placeholder %s stands for both %s and %s", w.Name, ref.ID, prev, name)
			}
			repl[ref.ID] = name
		}
	}
	text := string(w.JSON)
	var uses []string
	for ph, name := range repl {
		id, ok := ids[name]
		if !ok {
			return desiredWorkflow{}, fmt.Errorf("workflow %s: credential %s has no n8n id", w.Name, name)
		}
		// Placeholders are [A-Z0-9_] and ids are n8n's: no JSON escaping.
		text = strings.ReplaceAll(text, ph, id)
		uses = append(uses, name)
	}
	if left := placeholderRE.FindString(text); left != "" {
		return desiredWorkflow{}, fmt.Errorf("workflow %s: placeholder %s is not a node's credential", w.Name, left)
	}
	spec, err := n8n.SpecFromExport([]byte(text))
	if err != nil {
		return desiredWorkflow{}, fmt.Errorf("workflow %s: %w", w.Name, err)
	}
	body, err := json.Marshal(spec)
	if err != nil {
		return desiredWorkflow{}, fmt.Errorf("workflow %s: %w", w.Name, err)
	}
	sum := sha256.Sum256(body)
	slices.Sort(uses)
	return desiredWorkflow{name: w.Name, spec: spec, hash: hex.EncodeToString(sum[:]), uses: uses}, nil
}

// credentialFor picks the manifest credential a placeholder of a node's
// credential type stands for: the one of that type named by the
// placeholder, else the only one of that type.
func credentialFor(placeholder, typ string, creds []schema.ManifestCredential) (string, error) {
	var ofType []string
	for _, c := range creds {
		if c.Type != typ {
			continue
		}
		if PlaceholderFor(c.Name) == placeholder {
			return c.Name, nil
		}
		ofType = append(ofType, c.Name)
	}
	switch len(ofType) {
	case 0:
		return "", fmt.Errorf("placeholder %s: no credential of type %s", placeholder, typ)
	case 1:
		return ofType[0], nil
	}
	return "", fmt.Errorf("placeholder %s: credentials %s all have type %s and none is named by it",
		placeholder, strings.Join(ofType, ", "), typ)
}
