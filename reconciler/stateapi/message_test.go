package stateapi

import (
	"fmt"
	"testing"
)

func TestQuoteList(t *testing.T) {
	many := make([]string, 25)
	for i := range many {
		many[i] = fmt.Sprintf("f%02d", i)
	}
	tests := []struct {
		name   string
		fields []string
		want   string
	}{
		{"one", []string{"spec.state"}, `"spec.state"`},
		{"control bytes stay escaped", []string{"a\nb", "c\x00\u2028"}, `"a\nb", "c\x00\u2028"`},
		{"past the cap", many, `"f00", "f01", "f02", "f03", "f04", "f05", "f06", "f07", "f08", "f09", "f10", "f11", "f12", "f13", "f14", "f15", "f16", "f17", "f18", "f19", and 5 more`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := quoteList(tt.fields, maxListed); got != tt.want {
				t.Errorf("got %s\nwant %s", got, tt.want)
			}
		})
	}
}
