package pipeline

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"os"
	"sync"

	"github.com/gptbatch/gptbatch/jsonl"
)

// spool is an append-only temporary file of records, each a pair of byte
// strings (a head and a body), read back at the offset append returned.
// It lets --via batch keep what it knows of each line on disk, not in
// memory: the lines waiting for their batch, and the results waiting for
// their turn to be written. The file is unlinked as soon as it is made, so
// nothing is left behind however the process ends. Safe for concurrent
// use.
type spool struct {
	mu      sync.Mutex
	f       *os.File
	w       *bufio.Writer
	size    int64 // bytes appended, buffered ones included
	flushed int64 // bytes in the file
}

// spoolHeader is the two lengths before each record.
const spoolHeader = 8

// newSpool makes a spool in dir ("" for the temporary directory).
func newSpool(dir, name string) (*spool, error) {
	f, err := os.CreateTemp(dir, "gptbatch-"+name+"-*")
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	// Where an open file cannot be removed, close removes it.
	_ = os.Remove(f.Name())
	return &spool{f: f, w: bufio.NewWriterSize(f, 256<<10)}, nil
}

// append adds a record and returns its offset.
func (s *spool) append(head, body []byte) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	off := s.size
	var h [spoolHeader]byte
	binary.LittleEndian.PutUint32(h[:4], uint32(len(head)))
	binary.LittleEndian.PutUint32(h[4:], uint32(len(body)))
	s.w.Write(h[:])
	s.w.Write(head)
	if _, err := s.w.Write(body); err != nil {
		return 0, fmt.Errorf("spool: %w", err)
	}
	s.size += spoolHeader + int64(len(head)) + int64(len(body))
	return off, nil
}

// readable makes sure the bytes up to end are in the file, not the buffer.
func (s *spool) readable(end int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if end <= s.flushed {
		return nil
	}
	if err := s.w.Flush(); err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	s.flushed = s.size
	return nil
}

// guess is how much read reads at first: most records fit, and then one
// read(2) is enough.
const guess = 1024

// read returns the record at off: its head, and its body too if withBody.
func (s *spool) read(off int64, withBody bool) (head, body []byte, err error) {
	if err := s.readable(off + spoolHeader); err != nil {
		return nil, nil, err
	}
	b := make([]byte, guess)
	n, err := s.f.ReadAt(b, off)
	if n < spoolHeader {
		return nil, nil, fmt.Errorf("spool: %w", err)
	}
	hl, bl := int(binary.LittleEndian.Uint32(b[:4])), int(binary.LittleEndian.Uint32(b[4:]))
	want := spoolHeader + hl
	if withBody {
		want += bl
	}
	if err := s.readable(off + int64(want)); err != nil {
		return nil, nil, err
	}
	if n < want {
		b = append(b[:n], make([]byte, want-n)...)
		if _, err := s.f.ReadAt(b[n:], off+int64(n)); err != nil {
			return nil, nil, fmt.Errorf("spool: %w", err)
		}
	}
	b = b[spoolHeader:want]
	if withBody {
		return b[:hl], b[hl:], nil
	}
	return b, nil, nil
}

// close removes the spool.
func (s *spool) close() {
	s.f.Close()
	_ = os.Remove(s.f.Name())
}

// appendResult appends r as the results spool keeps it: its binary
// encoding, which jsonl.Result's doc lists among its codecs.
func appendResult(b []byte, r *jsonl.Result) []byte {
	b, _ = r.AppendBinary(b) // it never fails
	return b
}

// parseResult decodes what appendResult encoded.
func parseResult(b []byte) (*jsonl.Result, error) {
	r := new(jsonl.Result)
	if err := r.UnmarshalBinary(b); err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	return r, nil
}
