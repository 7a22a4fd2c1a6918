package activator

import (
	"net"
	"strings"
)

// ParseHost returns the DNS name of a Host header or SNI value: the port
// and one trailing dot removed, lowercased; false when it is not a DNS name
// (an IP literal with brackets, empty labels, bad characters, too long).
func ParseHost(s string) (string, bool) {
	if strings.Contains(s, ":") {
		h, _, err := net.SplitHostPort(s)
		if err != nil {
			return "", false
		}
		s = h
	}
	s = strings.ToLower(strings.TrimSuffix(s, "."))
	if s == "" || len(s) > 253 {
		return "", false
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return "", false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' && c != '_' {
				return "", false
			}
		}
	}
	return s, true
}
