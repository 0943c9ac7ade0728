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
// died mid-write (or the disk filled), a torn last line, which the next
// Append leaves on a line of its own and readers skip. Appends of other
// processes to the same file interleave whole records. Safe for
// concurrent use.
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
// After a torn last line it starts a new line, so that the record is not
// glued to the fragment.
func (j *Journal) Append(lines ...[]byte) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	var b bytes.Buffer
	torn, err := j.torn()
	if err != nil {
		return fmt.Errorf("batch journal: %w", err)
	}
	if torn {
		b.WriteByte('\n')
	}
	for _, l := range lines {
		b.Write(l)
		b.WriteByte('\n')
	}
	// The file's errors name it.
	if _, err := j.f.Write(b.Bytes()); err != nil {
		return fmt.Errorf("batch journal: %w", err)
	}
	if err := j.f.Sync(); err != nil {
		return fmt.Errorf("batch journal: %w", err)
	}
	return nil
}

// torn reports whether the journal ends in a line without its newline.
// Another process's append may land between this look and the write:
// that one is whole, and the worst case is a blank line, which readers
// skip.
func (j *Journal) torn() (bool, error) {
	fi, err := j.f.Stat()
	if err != nil || fi.Size() == 0 {
		return false, err
	}
	var last [1]byte
	if _, err := j.f.ReadAt(last[:], fi.Size()-1); err != nil {
		return false, err
	}
	return last[0] != '\n', nil
}

// Close closes the journal.
func (j *Journal) Close() error { return j.f.Close() }

// ReadJournal calls fn with each line of the journal at path, in order,
// without its newline, and its line number, and stops at the first error
// fn returns. A missing journal has no lines. Blank lines are skipped. A
// final line without its newline (a process killed mid-append) is given
// to fn too: fn, which parses the lines, tells a torn one. The slice fn
// gets is reused after fn returns.
func ReadJournal(path string, fn func(n int, line []byte) error) error {
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
	for n := 1; ; n++ {
		chunk, err := br.ReadSlice('\n')
		line = append(line, chunk...)
		if err == bufio.ErrBufferFull {
			n--
			continue
		}
		if err != nil && err != io.EOF {
			return fmt.Errorf("batch journal %s: %w", path, err)
		}
		if l := bytes.TrimSpace(line); len(l) > 0 {
			if err := fn(n, l); err != nil {
				return err
			}
		}
		if err == io.EOF {
			return nil
		}
		line = line[:0]
	}
}
