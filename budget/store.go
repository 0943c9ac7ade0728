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

// ReadLedger calls fn for each entry of a ledger, in order. Lines that do
// not parse (a line torn by a crash mid-append) are skipped and counted.
func ReadLedger(r io.Reader, fn func(LedgerEntry) error) (skipped int, err error) {
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		line, err := br.ReadBytes('\n')
		if err != nil && err != io.EOF {
			return skipped, err
		}
		if len(bytes.TrimSpace(line)) > 0 {
			var e LedgerEntry
			if json.Unmarshal(line, &e) != nil {
				skipped++
			} else if ferr := fn(e); ferr != nil {
				return skipped, ferr
			}
		}
		if err == io.EOF {
			return skipped, nil
		}
	}
}

// MemStore is a Store in memory, for dry runs and tests. The zero value is
// ready to use.
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
		return State{}, fmt.Errorf("usage file: %w", err)
	}
	s, err := ParseState(b)
	if err != nil {
		return State{}, fmt.Errorf("usage file %s is corrupt (%w); fix or remove it: gptbatch will not reset it", f.path, err)
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
	var s State
	err := f.locked(func() error {
		var err error
		s, err = f.read()
		return err
	})
	return s, err
}

// Update implements Store.
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

// write replaces usage.md atomically.
func (f *FileStore) write(b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(f.path), ".usage-*.tmp")
	if err != nil {
		return fmt.Errorf("write usage file: %w", err)
	}
	defer os.Remove(tmp.Name()) // after a successful rename, there is nothing to remove
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("write usage file: %w", err)
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("write usage file: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write usage file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write usage file: %w", err)
	}
	if err := os.Rename(tmp.Name(), f.path); err != nil {
		return fmt.Errorf("write usage file: %w", err)
	}
	return nil
}

// append adds entries to the ledger in one write.
func (f *FileStore) append(entries []LedgerEntry) error {
	if len(entries) == 0 {
		return nil
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	for _, e := range entries {
		if err := enc.Encode(e); err != nil {
			return fmt.Errorf("ledger: %w", err)
		}
	}
	lf, err := os.OpenFile(f.ledger, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("ledger: %w", err)
	}
	if err := f.repairTorn(lf); err != nil {
		lf.Close()
		return err
	}
	if _, err := lf.Write(b.Bytes()); err != nil {
		lf.Close()
		return fmt.Errorf("ledger: %w", err)
	}
	return lf.Close()
}

// repairTorn ends a torn last line (a crash mid-append) with a newline, so
// that the entries appended next stay whole lines; readers skip the torn
// one. Called under the lock.
func (f *FileStore) repairTorn(lf *os.File) error {
	st, err := lf.Stat()
	if err != nil || st.Size() == 0 {
		return err
	}
	last := make([]byte, 1)
	r, err := os.Open(f.ledger)
	if err != nil {
		return fmt.Errorf("ledger: %w", err)
	}
	defer r.Close()
	if _, err := r.ReadAt(last, st.Size()-1); err != nil {
		return fmt.Errorf("ledger: %w", err)
	}
	if last[0] != '\n' {
		_, err = lf.Write([]byte("\n"))
	}
	return err
}
