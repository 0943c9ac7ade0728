package budget

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/gofrs/flock"
)

// Store holds the shared State. Update is a locked read-modify-write: it
// loads the state, calls fn, and when fn returns nil saves what fn left and
// appends the ledger entries fn returned, all under one lock. A store that
// many hosts share (Redis, say) is another implementation of this
// interface. Implementations are safe for concurrent use.
type Store interface {
	Update(ctx context.Context, fn func(*State) ([]LedgerEntry, error)) error
}

// LedgerEntry is one API call: one JSON line of the ledger.
type LedgerEntry struct {
	Time             time.Time `json:"time"`
	ID               string    `json:"id"`
	Line             int       `json:"line"`
	Model            string    `json:"model"`
	Status           int       `json:"status"` // HTTP status; 0 = no response
	PromptTokens     int64     `json:"prompt_tokens"`
	CompletionTokens int64     `json:"completion_tokens"`
	CachedTokens     int64     `json:"cached_tokens"`
	CostUSD          *Cost     `json:"cost_usd"` // null when the price is unknown
	LatencyMS        int64     `json:"latency_ms"`
	Attempt          int       `json:"attempt"`
	Error            string    `json:"error,omitempty"` // the error type when the call failed
}

// ReadLedger calls fn for each entry of a ledger, in order, and stops at
// the first error fn returns. Blank lines are skipped, and so is a torn
// final line (one with no newline that does not parse: a process killed
// mid-append). Any other line that does not parse is an error naming its
// line number.
func ReadLedger(r io.Reader, fn func(LedgerEntry) error) error {
	_, err := readLedger(r, fn)
	return err
}

// readLedger is ReadLedger, also saying whether it skipped a torn final
// line.
func readLedger(r io.Reader, fn func(LedgerEntry) error) (torn bool, err error) {
	br := bufio.NewReaderSize(r, 64<<10)
	for n := 1; ; n++ {
		line, err := br.ReadBytes('\n')
		if err != nil && err != io.EOF {
			return false, fmt.Errorf("line %d: %w", n, err)
		}
		final := err == io.EOF
		if len(bytes.TrimSpace(line)) > 0 {
			var e LedgerEntry
			if jerr := json.Unmarshal(line, &e); jerr != nil {
				if final {
					return true, nil
				}
				return false, fmt.Errorf("line %d: not a ledger entry: %w", n, jerr)
			}
			if err := fn(e); err != nil {
				return false, err
			}
		}
		if final {
			return false, nil
		}
	}
}

// MemStore is a Store in memory, for dry runs and tests. The zero value is
// ready to use; it is safe for concurrent use.
type MemStore struct {
	mu      sync.Mutex
	state   State
	entries []LedgerEntry
}

// Update implements Store.
func (m *MemStore) Update(ctx context.Context, fn func(*State) ([]LedgerEntry, error)) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.state
	s.extra = append([][2]string(nil), s.extra...)
	es, err := fn(&s)
	if err != nil {
		return err
	}
	m.state = s
	m.entries = append(m.entries, es...)
	return nil
}

// State is the current state.
func (m *MemStore) State() State {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.state
}

// Entries are the ledger entries appended so far.
func (m *MemStore) Entries() []LedgerEntry {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]LedgerEntry(nil), m.entries...)
}

// FileStore is a Store over usage.md, shared by every process that names
// the same file: flock(2) on usage.md.lock guards it (not on usage.md
// itself, which each write replaces by rename), and each write goes to a
// temporary file that is synced and renamed over usage.md, so a crash at
// any moment leaves either the old file or the new one.
type FileStore struct {
	path, ledger string
	mu           sync.Mutex // flock is per open file; this orders our own goroutines
	lock         *flock.Flock
}

// OpenFile opens the usage file at path, creating its directory (0700) but
// no file yet. The lock file is path+".lock" and the ledger sits beside it
// (usage.ledger.jsonl for usage.md). An existing usage.md that does not
// parse is an error naming the file; it is never reset.
func OpenFile(path string) (*FileStore, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(abs), 0o700); err != nil {
		return nil, fmt.Errorf("usage file: %w", err)
	}
	f := &FileStore{
		path:   abs,
		ledger: strings.TrimSuffix(abs, ".md") + ".ledger.jsonl",
		lock:   flock.New(abs+".lock", flock.SetPermissions(0o600)),
	}
	if _, err := f.read(); err != nil {
		return nil, err
	}
	return f, nil
}

// Path is the usage file.
func (f *FileStore) Path() string { return f.path }

// LedgerPath is the ledger file.
func (f *FileStore) LedgerPath() string { return f.ledger }

// read parses usage.md; a missing file is a fresh state.
func (f *FileStore) read() (State, error) {
	b, err := os.ReadFile(f.path)
	if errors.Is(err, os.ErrNotExist) {
		return State{}, nil
	}
	if err != nil {
		return State{}, fmt.Errorf("usage file %s: %w", f.path, err)
	}
	s, err := ParseState(b)
	if err != nil {
		return State{}, fmt.Errorf("usage file %s is corrupt; gptbatch will not reset it, fix or remove it: %w", f.path, err)
	}
	return s, nil
}

func (f *FileStore) locked(fn func() error) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.lock.Lock(); err != nil {
		return fmt.Errorf("lock %s: %w", f.lock.Path(), err)
	}
	defer f.lock.Unlock()
	return fn()
}

// Load reads the state under the lock, without writing.
func (f *FileStore) Load(ctx context.Context) (State, error) {
	if err := ctx.Err(); err != nil {
		return State{}, err
	}
	var s State
	err := f.locked(func() error {
		var err error
		s, err = f.read()
		return err
	})
	return s, err
}

// Update implements Store: under the lock, it reads usage.md (a missing
// one is a fresh State; a corrupt one is an error naming the file, which is
// left as it is), calls fn, and when fn returns nil replaces usage.md if
// the state changed and appends fn's entries to the ledger in one write.
// The lock cannot be abandoned: ctx is checked before waiting for it.
func (f *FileStore) Update(ctx context.Context, fn func(*State) ([]LedgerEntry, error)) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return f.locked(func() error {
		old, err := f.read()
		if err != nil {
			return err
		}
		s := old
		s.extra = append([][2]string(nil), old.extra...)
		entries, err := fn(&s)
		if err != nil {
			return err
		}
		if !stateEqual(s, old) {
			if err := f.write(s.Format()); err != nil {
				return err
			}
		}
		return f.append(entries)
	})
}

func stateEqual(a, b State) bool {
	return bytes.Equal(a.Format(), b.Format())
}

// write replaces usage.md atomically: a temporary file in the same
// directory, synced, then renamed over it, so that a reader or a crash at
// any moment sees the old file or the new one, whole.
func (f *FileStore) write(b []byte) (err error) {
	tmp, err := os.CreateTemp(filepath.Dir(f.path), ".usage-*.tmp") // created 0600
	if err != nil {
		return fmt.Errorf("write usage file %s: %w", f.path, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
			err = fmt.Errorf("write usage file %s: %w", f.path, err)
		}
	}()
	if _, err := tmp.Write(b); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), f.path)
}

// append adds entries to the ledger in one write, after dealing with a
// torn last line. Called under the lock.
func (f *FileStore) append(entries []LedgerEntry) error {
	if len(entries) == 0 {
		return nil
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	for _, e := range entries {
		if err := enc.Encode(e); err != nil {
			return fmt.Errorf("ledger %s: %w", f.ledger, err)
		}
	}
	lf, err := os.OpenFile(f.ledger, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("ledger: %w", err)
	}
	if err := repairTorn(lf); err != nil {
		lf.Close()
		return fmt.Errorf("ledger %s: %w", f.ledger, err)
	}
	if _, err := lf.Write(b.Bytes()); err != nil {
		lf.Close()
		return fmt.Errorf("ledger %s: %w", f.ledger, err)
	}
	if err := lf.Close(); err != nil {
		return fmt.Errorf("ledger %s: %w", f.ledger, err)
	}
	return nil
}

// repairTorn makes the ledger end with a whole line again after a process
// was killed mid-append: a last line without its newline is finished when
// it parses (the write stopped just before the newline) and cut off
// otherwise, just as ReadLedger reads it either way. Appending after a
// torn line instead would leave a bad line in the middle.
func repairTorn(lf *os.File) error {
	st, err := lf.Stat()
	if err != nil || st.Size() == 0 {
		return err
	}
	// Find the start of the last line, reading back a block at a time.
	end := st.Size()
	buf := make([]byte, 64<<10)
	start := end
	for start > 0 {
		n := int64(len(buf))
		if n > start {
			n = start
		}
		if _, err := lf.ReadAt(buf[:n], start-n); err != nil {
			return err
		}
		if start == end && buf[n-1] == '\n' {
			return nil // whole
		}
		if i := bytes.LastIndexByte(buf[:n], '\n'); i >= 0 {
			start = start - n + int64(i) + 1
			break
		}
		start -= n
	}
	tail := make([]byte, end-start)
	if _, err := lf.ReadAt(tail, start); err != nil {
		return err
	}
	var e LedgerEntry
	if json.Unmarshal(tail, &e) == nil {
		_, err = lf.Write([]byte("\n"))
		return err
	}
	return lf.Truncate(start)
}

// Report is BuildReport of the ledger; a ledger not yet written is an
// empty one.
func (f *FileStore) Report(ctx context.Context, opt ReportOptions, loc *time.Location) (Report, error) {
	if err := ctx.Err(); err != nil {
		return Report{}, err
	}
	lf, err := os.Open(f.ledger)
	if errors.Is(err, os.ErrNotExist) {
		return BuildReport(strings.NewReader(""), opt, loc)
	}
	if err != nil {
		return Report{}, fmt.Errorf("ledger: %w", err)
	}
	defer lf.Close()
	rep, err := BuildReport(lf, opt, loc)
	if err != nil {
		return Report{}, fmt.Errorf("ledger %s: %w", f.ledger, err)
	}
	return rep, nil
}
