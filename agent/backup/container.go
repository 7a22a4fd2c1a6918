package backup

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
)

// Binding says what a backup is of. It is the first thing in the encrypted
// stream, so age authenticates it.
type Binding struct {
	Workspace  string    `json:"workspace"`
	Droplet    string    `json:"droplet"`
	BackupID   string    `json:"backup_id"`
	Created    time.Time `json:"created"`
	N8NVersion string    `json:"n8n_version"`
}

const (
	magic     = "GENESIS-BACKUP-1\n"
	endMarker = "E" + "GENESIS-BACKUP-END\n"

	maxBinding = 64 << 10
	maxChunk   = 1 << 20
	maxName    = 64

	sectionDump = "postgres.dump"
	sectionData = "data.tar"
)

// sectionOrder is the order sections must come in; data.tar is optional.
var sectionOrder = [...]string{sectionDump, sectionData}

// ErrContainer is wrapped by every error about a malformed container.
var ErrContainer = errors.New("malformed backup container")

// containerWriter writes the container format to w.
type containerWriter struct {
	w   io.Writer
	hdr [4]byte
}

func (cw *containerWriter) begin(b Binding) error {
	js, err := json.Marshal(b)
	if err != nil {
		return err
	}
	if len(js) > maxBinding {
		return fmt.Errorf("binding is %d bytes, more than %d", len(js), maxBinding)
	}
	if _, err := io.WriteString(cw.w, magic); err != nil {
		return err
	}
	if err := cw.u32(uint32(len(js))); err != nil {
		return err
	}
	_, err = cw.w.Write(js)
	return err
}

func (cw *containerWriter) u32(n uint32) error {
	binary.BigEndian.PutUint32(cw.hdr[:], n)
	_, err := cw.w.Write(cw.hdr[:])
	return err
}

// section starts a section; its data is written through the returned
// writer and ended with Close.
func (cw *containerWriter) section(name string) (io.WriteCloser, error) {
	if len(name) == 0 || len(name) > maxName {
		return nil, fmt.Errorf("section name %q", name)
	}
	if _, err := cw.w.Write(append([]byte{'S', byte(len(name))}, name...)); err != nil {
		return nil, err
	}
	return &chunkWriter{cw: cw}, nil
}

func (cw *containerWriter) end() error {
	_, err := io.WriteString(cw.w, endMarker)
	return err
}

// chunkWriter writes each Write as one or more chunks.
type chunkWriter struct{ cw *containerWriter }

func (c *chunkWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		k := min(len(p), maxChunk)
		if err := c.cw.u32(uint32(k)); err != nil {
			return n, err
		}
		m, err := c.cw.w.Write(p[:k])
		n += m
		if err != nil {
			return n, err
		}
		p = p[k:]
	}
	return n, nil
}

func (c *chunkWriter) Close() error { return c.cw.u32(0) }

// parser reads the container strictly. Its errors wrap ErrContainer and
// name the plaintext offset and the section.
type parser struct {
	r   *bufio.Reader
	off int64
}

// parseContainer reads a whole container from r. It calls binding once,
// first, and section for each section in order with a reader of its data;
// it drains what section leaves unread. It returns the binding, the names
// of the sections seen, and an error for anything malformed, including a
// missing end marker or data after it. Errors of the callbacks are
// returned as they are.
func parseContainer(r io.Reader, binding func(Binding) error, section func(name string, r io.Reader) error) (Binding, []string, error) {
	p := &parser{r: bufio.NewReaderSize(r, 64<<10)}
	var b Binding

	var m [len(magic)]byte
	if err := p.full(m[:], "magic"); err != nil {
		return b, nil, err
	}
	if string(m[:]) != magic {
		return b, nil, p.errf(0, "not a genesis backup (magic %q, want %q)", m[:], magic)
	}
	n, err := p.u32("binding length")
	if err != nil {
		return b, nil, err
	}
	if n == 0 || n > maxBinding {
		return b, nil, p.errf(p.off-4, "binding length %d out of range 1..%d", n, maxBinding)
	}
	js := make([]byte, n)
	at := p.off
	if err := p.full(js, "binding"); err != nil {
		return b, nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&b); err != nil {
		return b, nil, p.errf(at, "binding: %v", err)
	}
	if dec.More() {
		return b, nil, p.errf(at, "binding: data after the JSON object")
	}
	if b.Workspace == "" || b.BackupID == "" {
		return b, nil, p.errf(at, "binding: workspace and backup id must be set")
	}
	if err := binding(b); err != nil {
		return b, nil, err
	}

	var seen []string
	buf := make([]byte, 32<<10)
	for {
		at := p.off
		tag, err := p.r.ReadByte()
		if err != nil {
			return b, seen, p.eof(err, "a section or the end marker")
		}
		p.off++
		switch tag {
		case 'S':
		case endMarker[0]:
			var rest [len(endMarker) - 1]byte
			if err := p.full(rest[:], "end marker"); err != nil {
				return b, seen, err
			}
			if string(rest[:]) != endMarker[1:] {
				return b, seen, p.errf(at, "bad end marker %q", rest[:])
			}
			if len(seen) == 0 {
				return b, seen, p.errf(at, "no %s section", sectionDump)
			}
			if _, err := p.r.ReadByte(); err == nil {
				return b, seen, p.errf(p.off, "data after the end marker")
			} else if err != io.EOF {
				return b, seen, p.readErr(err, "after the end marker")
			}
			return b, seen, nil
		default:
			return b, seen, p.errf(at, "tag 0x%02x, want a section or the end marker", tag)
		}
		nl, err := p.r.ReadByte()
		if err != nil {
			return b, seen, p.eof(err, "section name length")
		}
		p.off++
		if nl == 0 || nl > maxName {
			return b, seen, p.errf(at, "section name length %d out of range 1..%d", nl, maxName)
		}
		var nameBuf [maxName]byte
		if err := p.full(nameBuf[:nl], "section name"); err != nil {
			return b, seen, err
		}
		name := string(nameBuf[:nl])
		if !expected(seen, name) {
			return b, seen, p.errf(at, "unexpected section %q after %q", name, seen)
		}
		seen = append(seen, name)
		sr := &sectionReader{p: p, name: name}
		if err := section(name, sr); err != nil {
			if sr.err != nil {
				return b, seen, sr.err // the container broke under the consumer
			}
			return b, seen, err
		}
		if _, err := io.CopyBuffer(io.Discard, sr, buf); err != nil {
			return b, seen, err
		}
	}
}

// expected reports whether section name may follow the sections seen.
func expected(seen []string, name string) bool {
	i := 0
	if len(seen) > 0 {
		for i < len(sectionOrder) && sectionOrder[i] != seen[len(seen)-1] {
			i++
		}
		i++
	}
	if i == 0 {
		return name == sectionDump // the dump is required and first
	}
	for ; i < len(sectionOrder); i++ {
		if sectionOrder[i] == name {
			return true
		}
	}
	return false
}

// sectionReader reads one section's chunks as one stream.
type sectionReader struct {
	p      *parser
	name   string
	left   uint32 // bytes left in the current chunk
	done   bool
	err    error // a container error, sticky
	length int64
}

func (s *sectionReader) Read(b []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	if s.done {
		return 0, io.EOF
	}
	if s.left == 0 {
		at := s.p.off
		n, err := s.p.u32(fmt.Sprintf("section %q chunk length", s.name))
		if err != nil {
			s.err = err
			return 0, err
		}
		if n == 0 {
			s.done = true
			return 0, io.EOF
		}
		if n > maxChunk {
			s.err = s.p.errf(at, "section %q: chunk length %d exceeds %d", s.name, n, maxChunk)
			return 0, s.err
		}
		s.left = n
	}
	if uint32(len(b)) > s.left {
		b = b[:s.left]
	}
	n, err := s.p.r.Read(b)
	s.p.off += int64(n)
	s.left -= uint32(n)
	s.length += int64(n)
	if err != nil {
		if n > 0 && err == io.EOF {
			return n, nil // the next Read reports the cut
		}
		s.err = s.p.eof(err, fmt.Sprintf("section %q data", s.name))
		return n, s.err
	}
	return n, nil
}

func (p *parser) full(b []byte, what string) error {
	n, err := io.ReadFull(p.r, b)
	p.off += int64(n)
	if err != nil {
		return p.eof(err, what)
	}
	return nil
}

func (p *parser) u32(what string) (uint32, error) {
	var b [4]byte
	if err := p.full(b[:], what); err != nil {
		return 0, err
	}
	return binary.BigEndian.Uint32(b[:]), nil
}

// eof turns a read error into a container error: a cut is "truncated".
func (p *parser) eof(err error, what string) error {
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return p.errf(p.off, "truncated: end of data while reading %s", what)
	}
	return p.readErr(err, what)
}

// readErr wraps an error of the underlying reader (age's authentication
// failures among them).
func (p *parser) readErr(err error, what string) error {
	return fmt.Errorf("offset %d: reading %s: %w", p.off, what, err)
}

func (p *parser) errf(off int64, format string, args ...any) error {
	return fmt.Errorf("%w: offset %d: %s", ErrContainer, off, fmt.Sprintf(format, args...))
}
