package syncio

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"testing"
)

// TestConcurrentWrites: (run with -race) every write of many goroutines
// arrives whole.
func TestConcurrentWrites(t *testing.T) {
	var b Buffer
	var out bytes.Buffer
	w := &Writer{W: &out}
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 50 {
				line := fmt.Sprintf("%02d-%02d\n", i, j)
				b.Write([]byte(line))
				w.Write([]byte(line))
				_ = b.String()
			}
		}()
	}
	wg.Wait()
	for name, s := range map[string]string{"Buffer": b.String(), "Writer": out.String()} {
		if n := strings.Count(s, "\n"); n != 1000 || len(s) != 6000 {
			t.Errorf("%s: %d lines, %d bytes; want 1000 whole lines", name, n, len(s))
		}
	}
}
