package schema

import (
	"fmt"
	"regexp"
	"sort"
	"strings"
)

// Error is one problem in one file of the state repository, located by line
// and column (both 1-based; 0 when the problem concerns the file as a whole).
type Error struct {
	File    string `json:"file"`
	Line    int    `json:"line"`
	Col     int    `json:"col"`
	Message string `json:"message"`
}

func (e Error) Error() string {
	if e.Line == 0 {
		return fmt.Sprintf("%s: %s", e.File, e.Message)
	}
	return fmt.Sprintf("%s:%d:%d: %s", e.File, e.Line, e.Col, e.Message)
}

// Errors is a list of problems, possibly across several files. A nil or
// empty list means valid.
type Errors []Error

func (es Errors) Error() string {
	parts := make([]string, len(es))
	for i, e := range es {
		parts[i] = e.Error()
	}
	return strings.Join(parts, "\n")
}

// Err returns es as an error, or nil when es is empty.
func (es Errors) Err() error {
	if len(es) == 0 {
		return nil
	}
	return es
}

// Sort orders the errors by file, line and column, keeping the order of
// errors at the same place.
func (es Errors) Sort() {
	sort.SliceStable(es, func(i, j int) bool {
		a, b := es[i], es[j]
		if a.File != b.File {
			return a.File < b.File
		}
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		return a.Col < b.Col
	})
}

// Pos is a place in a file.
type Pos struct {
	Line int
	Col  int
}

// errorf collects errors for one file.
type errorf struct {
	file string
	errs Errors
}

func (c *errorf) at(p Pos, format string, args ...any) {
	c.errs = append(c.errs, Error{File: c.file, Line: p.Line, Col: p.Col, Message: fmt.Sprintf(format, args...)})
}

// itemKey judges the field of list item p that names the item (an
// account's name, a credential's name, a workflow's template): it is
// required, matches re (want says how, after the quoted value), and is not
// a name an earlier item took (seen; noun names the item). It adds the name
// to seen.
func itemKey(at func(path, format string, args ...any), p, field, v string, re *regexp.Regexp, want, noun string, seen map[string]bool) {
	switch {
	case v == "":
		at(p, "%s.%s is required", p, field)
	case !re.MatchString(v):
		at(p+"."+field, "%s.%s: %q %s", p, field, v, want)
	case seen[v]:
		at(p+"."+field, "%s.%s: %s %q is declared twice", p, field, noun, v)
	}
	seen[v] = true
}
