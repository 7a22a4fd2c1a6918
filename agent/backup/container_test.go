package backup

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestParseContainer: each malformed plaintext gets its exact error,
// naming the offset and the section.
func TestParseContainer(t *testing.T) {
	good := craft(t, testBinding, true, [2]string{sectionDump, "PGDMP dump"}, [2]string{sectionData, "tar"})
	bindingEnd := len(magic) + 4 + int(binary.BigEndian.Uint32(good[len(magic):]))
	u32 := func(n uint32) string { return string(binary.BigEndian.AppendUint32(nil, n)) }
	head := func(js string) string { return magic + u32(uint32(len(js))) + js }
	bj := `{"workspace":"acme","droplet":"d","backup_id":"b","created":"2025-01-01T00:00:00Z","n8n_version":"1"}`
	tests := []struct {
		name, in, wantErr string
	}{
		{"empty", "", "malformed backup container: offset 0: truncated: end of data while reading magic"},
		{"other magic", "GENESIS-BACKUP-2\n", `malformed backup container: offset 0: not a genesis backup (magic "GENESIS-BACKUP-2\n", want "GENESIS-BACKUP-1\n")`},
		{"binding length zero", magic + u32(0), "malformed backup container: offset 17: binding length 0 out of range 1..65536"},
		{"binding length huge", magic + u32(0xFFFFFFFF), "malformed backup container: offset 17: binding length 4294967295 out of range 1..65536"},
		{"binding cut", magic + u32(100) + "{}", "malformed backup container: offset 23: truncated: end of data while reading binding"},
		{"binding not JSON", head("nope"), "malformed backup container: offset 21: binding: invalid character 'o' in literal null (expecting 'u')"},
		{"binding unknown field", head(`{"workspace":"a","backup_id":"b","extra":1}`), `malformed backup container: offset 21: binding: json: unknown field "extra"`},
		{"binding two objects", head(`{"workspace":"a","backup_id":"b"}{}`), "malformed backup container: offset 21: binding: data after the JSON object"},
		{"binding without workspace", head(`{"backup_id":"b"}`), "malformed backup container: offset 21: binding: workspace and backup id must be set"},
		{"unknown tag", head(bj) + "X", "malformed backup container: offset 122: tag 0x58, want a section or the end marker"},
		{"unknown section", head(bj) + "S\x05other", `malformed backup container: offset 122: unexpected section "other" after []`},
		{"data before dump", head(bj) + "S\x08data.tar" + u32(0), `malformed backup container: offset 122: unexpected section "data.tar" after []`},
		{"dump twice", head(bj) + "S\x0dpostgres.dump" + u32(0) + "S\x0dpostgres.dump", `malformed backup container: offset 141: unexpected section "postgres.dump" after ["postgres.dump"]`},
		{"section name empty", head(bj) + "S\x00", "malformed backup container: offset 122: section name length 0 out of range 1..64"},
		{"section name long", head(bj) + "S\xff", "malformed backup container: offset 122: section name length 255 out of range 1..64"},
		{"chunk too long", head(bj) + "S\x0dpostgres.dump" + u32(0xFFFFFFFF), `malformed backup container: offset 137: section "postgres.dump": chunk length 4294967295 exceeds 1048576`},
		{"chunk cut", head(bj) + "S\x0dpostgres.dump" + u32(10) + "PGDMP", `malformed backup container: offset 146: truncated: end of data while reading section "postgres.dump" data`},
		{"section not closed", head(bj) + "S\x0dpostgres.dump" + u32(1) + "P", `malformed backup container: offset 142: truncated: end of data while reading section "postgres.dump" chunk length`},
		{"bad end marker", head(bj) + "S\x0dpostgres.dump" + u32(0) + "EGENESIS-BACKUP-FIN\n", `malformed backup container: offset 141: bad end marker "GENESIS-BACKUP-FIN\n"`},
		{"end marker cut", head(bj) + "S\x0dpostgres.dump" + u32(0) + "EGENESIS", "malformed backup container: offset 149: truncated: end of data while reading end marker"},
		{"cut after the binding", string(good[:bindingEnd]), "malformed backup container: offset 137: truncated: end of data while reading a section or the end marker"},
		{"trailing data", string(good) + "\x00", "malformed backup container: offset 211: data after the end marker"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := parseContainer(strings.NewReader(tc.in), func(Binding) error { return nil }, func(string, io.Reader) error { return nil })
			if err == nil || err.Error() != tc.wantErr {
				t.Errorf("error\n got %v\nwant %s", err, tc.wantErr)
			}
			if !errors.Is(err, ErrContainer) {
				t.Errorf("%v is not ErrContainer", err)
			}
		})
	}
	t.Run("good", func(t *testing.T) {
		got := map[string]string{}
		b, seen, err := parseContainer(bytes.NewReader(good), func(Binding) error { return nil }, func(name string, r io.Reader) error {
			d, err := io.ReadAll(r)
			got[name] = string(d)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(b, testBinding); diff != "" {
			t.Errorf("binding (-got +want):\n%s", diff)
		}
		if diff := cmp.Diff(seen, []string{sectionDump, sectionData}); diff != "" {
			t.Errorf("sections (-got +want):\n%s", diff)
		}
		if diff := cmp.Diff(got, map[string]string{sectionDump: "PGDMP dump", sectionData: "tar"}); diff != "" {
			t.Errorf("data (-got +want):\n%s", diff)
		}
	})
}

// TestParseAllocations: the parser's memory does not follow the lengths it
// reads; a stream of maximal chunks is read through fixed buffers.
func TestParseAllocations(t *testing.T) {
	u32 := func(n uint32) []byte { return binary.BigEndian.AppendUint32(nil, n) }
	var huge bytes.Buffer
	huge.Write(craft(t, testBinding, false)[:])
	huge.WriteString("S\x0dpostgres.dump")
	chunk := bytes.Repeat([]byte{'x'}, maxChunk)
	for range 16 { // 16 MiB of section data
		huge.Write(u32(maxChunk))
		huge.Write(chunk)
	}
	huge.Write(u32(0))
	huge.WriteString(endMarker)
	inputs := map[string][]byte{
		"binding length 4 GiB":   slices.Concat([]byte(magic), u32(0xFFFFFFFF)),
		"chunk length 4 GiB":     slices.Concat(craft(t, testBinding, false), []byte("S\x0dpostgres.dump"), u32(0xFFFFFFFF), []byte("x")),
		"16 MiB in 1 MiB chunks": huge.Bytes(),
	}
	for name, in := range inputs {
		t.Run(name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			parseContainer(bytes.NewReader(in), func(Binding) error { return nil }, func(string, io.Reader) error { return nil })
			runtime.ReadMemStats(&after)
			if d := after.TotalAlloc - before.TotalAlloc; d > 1<<20 {
				t.Errorf("parsing allocated %d bytes", d)
			}
		})
	}
}

// FuzzContainer: the parser never panics, and what it accepts is exactly
// what the writer makes of the same binding and sections.
func FuzzContainer(f *testing.F) {
	f.Add(craft(f, testBinding, true, [2]string{sectionDump, "PGDMP"}))
	f.Add(craft(f, testBinding, true, [2]string{sectionDump, "PGDMP" + strings.Repeat("d", 300)}, [2]string{sectionData, "t"}))
	f.Add(craft(f, testBinding, true, [2]string{sectionDump, ""}, [2]string{sectionData, ""}))
	f.Add(craft(f, testBinding, false, [2]string{sectionDump, "PGDMP"}))
	f.Add([]byte(magic))
	f.Fuzz(func(t *testing.T, in []byte) {
		var sections [][2]string
		b, seen, err := parseContainer(bytes.NewReader(in), func(Binding) error { return nil }, func(name string, r io.Reader) error {
			// Read at most a little, as a consumer that stops early.
			d, err := io.ReadAll(io.LimitReader(r, 1<<20))
			sections = append(sections, [2]string{name, string(d)})
			return err
		})
		if err != nil {
			if !errors.Is(err, ErrContainer) {
				t.Fatalf("error %v is not ErrContainer", err)
			}
			return
		}
		if len(seen) != len(sections) || seen[0] != sectionDump {
			t.Fatalf("sections %v", seen)
		}
		// Parse the writer's version: same binding, same data.
		var buf bytes.Buffer
		cw := &containerWriter{w: &buf}
		if err := cw.begin(b); err != nil {
			return // re-encoded JSON can outgrow the bound ("<" becomes \u003c)
		}
		for _, s := range sections {
			w, _ := cw.section(s[0])
			io.WriteString(w, s[1])
			w.Close()
		}
		cw.end()
		again := buf.Bytes()
		var sections2 [][2]string
		b2, _, err := parseContainer(bytes.NewReader(again), func(Binding) error { return nil }, func(name string, r io.Reader) error {
			d, err := io.ReadAll(r)
			sections2 = append(sections2, [2]string{name, string(d)})
			return err
		})
		if err != nil {
			t.Fatalf("rewritten container: %v", err)
		}
		if diff := cmp.Diff(b2, b); diff != "" {
			t.Fatalf("binding (-got +want):\n%s", diff)
		}
		if diff := cmp.Diff(sections2, sections); diff != "" {
			t.Fatalf("sections (-got +want):\n%s", diff)
		}
	})
}
