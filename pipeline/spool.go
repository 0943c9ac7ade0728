package pipeline

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"sync"

	"github.com/gptbatch/gptbatch/budget"
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

// readHeads reads the heads of the records at offs, which ascend, in a
// few large reads rather than one a record, and calls fn with each: the
// head is fn's only for the call. fn returns false to stop.
func (s *spool) readHeads(offs []int64, fn func(i int, head []byte) bool) error {
	if len(offs) == 0 {
		return nil
	}
	if err := s.readable(s.sizeNow()); err != nil {
		return err
	}
	win := make([]byte, 256<<10)
	var start, end int64 // the file's bytes in win[:end-start]
	fill := func(off int64, need int) error {
		if need > len(win) {
			win = make([]byte, need)
		}
		n, err := s.f.ReadAt(win, off)
		if n < need {
			return fmt.Errorf("spool: %w", err)
		}
		start, end = off, off+int64(n)
		return nil
	}
	for i, off := range offs {
		if off < start || off+spoolHeader > end {
			if err := fill(off, spoolHeader); err != nil {
				return err
			}
		}
		hl := int64(binary.LittleEndian.Uint32(win[off-start:]))
		if off+spoolHeader+hl > end {
			if err := fill(off, spoolHeader+int(hl)); err != nil {
				return err
			}
		}
		at := off - start + spoolHeader
		if !fn(i, win[at:at+hl]) {
			return nil
		}
	}
	return nil
}

// sizeNow is the bytes appended so far.
func (s *spool) sizeNow() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.size
}

// close removes the spool.
func (s *spool) close() {
	s.f.Close()
	_ = os.Remove(s.f.Name())
}

// appendRecord encodes a line's record for the spool: integers as
// varints, strings with their length. It takes a tenth of JSON's time to
// read back, and every collected answer reads one.
func appendRecord(b []byte, rec *lineRecord) []byte {
	b = binary.AppendVarint(b, int64(rec.Line))
	b = binary.AppendVarint(b, rec.Prompt)
	b = binary.AppendVarint(b, rec.EstTokens)
	b = binary.AppendVarint(b, int64(rec.EstCost))
	// One byte of flags: priced, and for embeddings single and floats.
	var flags byte
	for i, f := range []bool{rec.Priced, rec.Single, rec.Floats} {
		if f {
			flags |= 1 << i
		}
	}
	b = append(b, flags)
	for _, s := range []string{rec.ID, rec.Model, rec.URL, rec.Hash, string(rec.Metadata)} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	return appendHeld(b, &rec.Held)
}

// parseRecord decodes what appendRecord encoded.
func parseRecord(b []byte) (lineRecord, error) {
	var rec lineRecord
	bad := fmt.Errorf("spool: a damaged line record")
	var ints [4]int64
	for i := range ints {
		v, n := binary.Varint(b)
		if n <= 0 {
			return rec, bad
		}
		ints[i], b = v, b[n:]
	}
	if len(b) == 0 {
		return rec, bad
	}
	rec.Line, rec.Prompt, rec.EstTokens, rec.EstCost = int(ints[0]), ints[1], ints[2], budget.Cost(ints[3])
	rec.Priced, rec.Single, rec.Floats, b = b[0]&1 != 0, b[0]&2 != 0, b[0]&4 != 0, b[1:]
	var strs [5]string
	for i := range strs {
		l, n := binary.Uvarint(b)
		if n <= 0 || uint64(len(b)-n) < l {
			return rec, bad
		}
		strs[i], b = string(b[n:n+int(l)]), b[n+int(l):]
	}
	rec.ID, rec.Model, rec.URL, rec.Hash = strs[0], strs[1], strs[2], strs[3]
	if strs[4] != "" {
		rec.Metadata = json.RawMessage(strs[4])
	}
	var err error
	rec.Held, _, err = parseHeld(b)
	return rec, err
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
