package budget

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

// JournalPathFor is where the Batch API journal that goes with the usage
// file usagePath lives: usage.batches.jsonl beside usage.md (beside the
// target of a usage file that is a symbolic link, as OpenFile places its
// files). A usage file of /dev/null (by any name) has no place of its own,
// so its journal is a file of the user's in the temporary directory, and
// temp says so. A run with a Redis store keeps its journal here too:
// --resume collects on the host that submitted.
func JournalPathFor(usagePath string) (path string, temp bool) {
	if isDevNull(usagePath) {
		return filepath.Join(os.TempDir(), fmt.Sprintf("gptbatch-%d.batches.jsonl", os.Geteuid())), true
	}
	if abs, err := filepath.Abs(usagePath); err == nil {
		if target, err := resolve(abs); err == nil {
			usagePath = target
		}
	}
	return strings.TrimSuffix(usagePath, ".md") + ".batches.jsonl", false
}

// Journal is an append-only file of JSON lines that must survive a crash:
// each Append is one write(2) to a file opened O_APPEND, then fsync(2), so
// a record is either whole on disk when Append returns or, if the process
// died mid-write, a torn last line that ReadJournal skips. Appends of other
// processes to the same file interleave whole records. Safe for concurrent
// use.
type Journal struct {
	mu   sync.Mutex
	f    *os.File
	path string
}

// OpenJournal opens the journal at path, creating it with mode perm (and
// its directory 0700) if need be. As for the ledger, it is opened never
// through a symbolic link nor blocking on a named pipe, and refused if it
// is not a regular file, or if it belongs to another user.
func OpenJournal(path string, perm os.FileMode) (*Journal, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("batch journal: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND|os.O_CREATE|openSafe, perm)
	if err != nil {
		return nil, fmt.Errorf("batch journal: %w", err)
	}
	if err := checkJournal(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("batch journal %s: %w", path, err)
	}
	return &Journal{f: f, path: path}, nil
}

func checkJournal(f *os.File) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("is %s, not a regular file; gptbatch will not use it", kindOf(fi))
	}
	if uid, _, ok := owner(fi); ok && uid != os.Geteuid() {
		return errors.New("belongs to another user; gptbatch will not use it")
	}
	return nil
}

// Path is the journal's file.
func (j *Journal) Path() string { return j.path }

// Append writes lines, each a JSON value without its newline, in one
// write, and syncs the file: when Append returns nil they are on disk.
func (j *Journal) Append(lines ...[]byte) error {
	var b bytes.Buffer
	for _, l := range lines {
		b.Write(l)
		b.WriteByte('\n')
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	// The file's errors name it.
	if _, err := j.f.Write(b.Bytes()); err != nil {
		return fmt.Errorf("batch journal: %w", err)
	}
	if err := j.f.Sync(); err != nil {
		return fmt.Errorf("batch journal: %w", err)
	}
	return nil
}

// Close closes the journal.
func (j *Journal) Close() error { return j.f.Close() }

// ReadJournal calls fn with each line of the journal at path, in order,
// without its newline, and stops at the first error fn returns. A missing
// journal has no lines. Blank lines are skipped, and so is a torn final
// line (no newline: a process killed mid-append), which fn never sees.
// The slice fn gets is reused after fn returns.
func ReadJournal(path string, fn func(line []byte) error) error {
	f, err := os.OpenFile(path, os.O_RDONLY|openSafe, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("batch journal: %w", err)
	}
	defer f.Close()
	if err := checkJournal(f); err != nil {
		return fmt.Errorf("batch journal %s: %w", path, err)
	}
	br := bufio.NewReaderSize(f, 64<<10)
	var line []byte
	for {
		chunk, err := br.ReadSlice('\n')
		line = append(line, chunk...)
		if err == bufio.ErrBufferFull {
			continue
		}
		if err == io.EOF {
			return nil // a torn last line, or none
		}
		if err != nil {
			return fmt.Errorf("batch journal %s: %w", path, err)
		}
		if l := bytes.TrimSpace(line); len(l) > 0 {
			if err := fn(l); err != nil {
				return err
			}
		}
		line = line[:0]
	}
}
