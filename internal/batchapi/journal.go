package batchapi

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/gptbatch/gptbatch/budget"
)

// The journal of --via batch is a file of JSON lines beside usage.md
// (usage.batches.jsonl), one record an event, appended and fsync'd: a
// batch is recorded as submitted before anything waits for it, so that
// nothing paid for is forgotten, whatever becomes of the process.

// JournalPath is where the journal that goes with the usage file usagePath
// lives: usage.batches.jsonl beside usage.md (beside the target of a usage
// file that is a symbolic link, as the budget places its files). A usage
// file of /dev/null (by any name) has no place of its own, so its journal
// is a file of the user's in the temporary directory, and temp says so. A
// run with a Redis store keeps its journal here too: --resume collects on
// the host that submitted. It is the one rule for where a journal lives.
func JournalPath(usagePath string) (path string, temp bool) {
	if p, ok := budget.Beside(usagePath, ".batches.jsonl"); ok {
		return p, false
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("gptbatch-%d.batches.jsonl", os.Geteuid())), true
}

// JournalError is a journal that cannot be opened or read: a fault of the
// configuration (exit status 2), not of the API.
type JournalError struct{ Err error }

func (e *JournalError) Error() string { return "batch journal: " + e.Err.Error() }

// Unwrap returns the cause.
func (e *JournalError) Unwrap() error { return e.Err }

// ExitCode is 2, the exit status of bad usage or configuration.
func (e *JournalError) ExitCode() int { return 2 }

// The journal's events.
const (
	// EventCreating: a batch of an uploaded file is about to be created,
	// recorded before the call, so that a run killed while it is in
	// flight leaves word of a batch it may have made.
	EventCreating  = "creating"
	EventSubmitted = "submitted"   // a batch was created: what it holds
	EventCollected = "collected"   // its results were settled in the ledger
	EventCancelled = "cancelled"   // `gptbatch batches cancel` cancelled it
	EventNotMade   = "not_created" // a creating record made no batch
)

// JournalRecord is one line of the batch journal.
type JournalRecord struct {
	Event   string    `json:"event"`
	Time    time.Time `json:"time"`
	BatchID string    `json:"batch_id"`

	// Submitted: the run and its chunk (also in the batch's metadata, so a
	// lost journal can be rebuilt from the API's list of batches), where
	// the lines went, and what they reserved of the day's budget.
	Run         string      `json:"run,omitempty"`
	Chunk       int         `json:"chunk,omitempty"`
	Create      int         `json:"create,omitempty"` // which creation of the chunk's file (gptbatch_create)
	Endpoint    string      `json:"endpoint,omitempty"`
	Model       string      `json:"model,omitempty"`
	InputFileID string      `json:"input_file_id,omitempty"`
	Lines       int         `json:"lines,omitempty"`
	EstTokens   int64       `json:"est_tokens,omitempty"`
	EstCost     budget.Cost `json:"est_cost_usd,omitempty"`
	Day         string      `json:"day,omitempty"`          // the budget's day the estimate was reserved in
	InputTokens int64       `json:"input_tokens,omitempty"` // what it enqueues
	// Items are the lines the batch holds: their custom_id and a hash of
	// what was sent (LineHash), so that --resume claims exactly the lines
	// whose content is unchanged.
	Items []JournalItem `json:"items,omitempty"`

	// Collected: how the batch ended and where its results are.
	Status       string `json:"status,omitempty"`
	OutputFileID string `json:"output_file_id,omitempty"`
	ErrorFileID  string `json:"error_file_id,omitempty"`
}

// JournalItem is one line of a submitted batch.
type JournalItem struct {
	CustomID string
	Hash     string
	// Tries, for a line a batch holds once more after it was in earlier
	// batches (it failed there, or --schema asks an invalid answer
	// again), is what those tries were, for --resume to go on from: the
	// pipeline's, kept as it is. Nil for a line's first try.
	Tries json.RawMessage
}

// MarshalJSON writes the item as a pair, ["line-17","<hash>"]: a batch of
// 50,000 lines records 50,000 of them; with Tries, a triple.
func (it JournalItem) MarshalJSON() ([]byte, error) {
	if len(it.Tries) == 0 {
		return json.Marshal([2]string{it.CustomID, it.Hash})
	}
	return json.Marshal([]any{it.CustomID, it.Hash, it.Tries})
}

// UnmarshalJSON reads a pair, or a triple.
func (it *JournalItem) UnmarshalJSON(b []byte) error {
	var p []json.RawMessage
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	if len(p) < 2 || len(p) > 3 {
		return fmt.Errorf("a batch line of %d members, want 2 or 3", len(p))
	}
	if err := json.Unmarshal(p[0], &it.CustomID); err != nil {
		return err
	}
	if err := json.Unmarshal(p[1], &it.Hash); err != nil {
		return err
	}
	if len(p) == 3 {
		it.Tries = p[2]
	}
	return nil
}

// Journal is the batch journal open to append. Each Append is one
// write(2) to a file opened O_APPEND, then fsync(2), so a record is
// either whole on disk when Append returns or, if the process died
// mid-write (or the disk filled), a torn last line, which the next Append
// leaves on a line of its own and ReadJournal skips. Appends of other
// processes to the same file interleave whole records. Safe for
// concurrent use.
type Journal struct {
	mu   sync.Mutex
	f    *os.File
	path string
	tag  string // JournalTag(path), which its batches carry
}

// OpenJournal opens the journal at path to append, creating it (0600, and
// its directory 0700) if need be. Like the budget's files, it is opened
// never through a symbolic link nor blocking on a named pipe, and refused
// if it is not a regular file or belongs to another user.
func OpenJournal(path string) (*Journal, error) {
	f, err := budget.OpenOwn(path, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, &JournalError{err}
	}
	return &Journal{f: f, path: path, tag: JournalTag(path)}, nil
}

// Path is the journal's file.
func (j *Journal) Path() string { return j.path }

// Append writes recs, a line each, in one write, and syncs the file: when
// Append returns nil they are on disk. After a torn last line it starts a
// new line, so that the record is not glued to the fragment.
func (j *Journal) Append(recs ...JournalRecord) error {
	var b bytes.Buffer
	for _, rec := range recs {
		line, err := json.Marshal(rec)
		if err != nil {
			return err
		}
		b.Write(line)
		b.WriteByte('\n')
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	torn, err := j.torn()
	if err != nil {
		return fmt.Errorf("batch journal: %w", err)
	}
	out := b.Bytes()
	if torn {
		out = append([]byte{'\n'}, out...)
	}
	// The file's errors name it.
	if _, err := j.f.Write(out); err != nil {
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

// JournalBatch is a batch as the journal tells it: the record of its
// submission, and what happened to it since.
type JournalBatch struct {
	JournalRecord
	Collected bool   // its results were settled: collecting again counts nothing
	Final     string // its status when collected, if it was
	Cancelled bool
}

// ReadJournal reads the batches recorded in the journal at path, oldest
// first, leaving out those submitted before since. With items false, the
// lines of each batch are left out, to save memory. A missing journal
// records none. Lines that are not records are skipped, and skipped says
// so, a message a line, to be reported: one such line (torn by a crash or
// a full disk, or edited by hand) must not cost the batches recorded
// after it, nor stop a cron job for good.
func ReadJournal(path string, since time.Time, items bool) (bs []*JournalBatch, skipped []string, err error) {
	byID := map[string]*JournalBatch{}
	skipped, err = scan(path, items, func(rec JournalRecord) {
		switch rec.Event {
		case EventSubmitted:
			if rec.Time.Before(since) || byID[rec.BatchID] != nil {
				// A batch found again (--resume after a kill while it
				// was created, by another run) is the one recorded first.
				return
			}
			b := &JournalBatch{JournalRecord: rec}
			bs = append(bs, b)
			byID[rec.BatchID] = b
		case EventCollected:
			if b := byID[rec.BatchID]; b != nil {
				b.Collected, b.Final = true, rec.Status
			}
		case EventCancelled:
			if b := byID[rec.BatchID]; b != nil {
				b.Cancelled = true
			}
		}
	})
	return bs, skipped, err
}

// scan calls fn with each record of the journal at path, in order; with
// items false, without the lines of a batch, to save memory. A line that
// is not a record is skipped, and said in skipped. Blank lines are
// skipped; a final line without its newline (a process killed
// mid-append) is read too, and skipped if it is torn.
func scan(path string, items bool, fn func(rec JournalRecord)) (skipped []string, err error) {
	f, err := budget.OpenOwn(path, os.O_RDONLY, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, &JournalError{err}
	}
	defer f.Close()
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
			return skipped, &JournalError{fmt.Errorf("%s: %w", path, err)}
		}
		if l := bytes.TrimSpace(line); len(l) > 0 {
			rec, rerr := parseRecord(l, items)
			if rerr != nil {
				skipped = append(skipped, fmt.Sprintf("batch journal %s: line %d is not a record, skipped: %v", path, n, rerr))
			} else {
				fn(rec)
			}
		}
		if err == io.EOF {
			return skipped, nil
		}
		line = line[:0]
	}
}

// parseRecord reads a line of the journal; with items false, without the
// lines of a batch.
func parseRecord(line []byte, items bool) (JournalRecord, error) {
	var rec JournalRecord
	var err error
	if items {
		err = json.Unmarshal(line, &rec)
	} else {
		var head struct {
			JournalRecord
			Items json.RawMessage `json:"items"` // skipped
		}
		err = json.Unmarshal(line, &head)
		rec = head.JournalRecord
	}
	if err == nil && rec.Event == "" {
		err = errors.New("no event")
	}
	return rec, err
}

// createKey names one creation of a batch: the run, its chunk, which
// creation of the chunk's file, and the file.
type createKey struct {
	run         string
	chunk, make int
	file        string
}

func keyOf(rec JournalRecord) createKey {
	return createKey{rec.Run, rec.Chunk, rec.Create, rec.InputFileID}
}

// openCreates are the creating records of the journal at path since
// since that no submitted or not_created record follows, oldest first: a
// run ended while their create was in flight. Lines that are not records
// are skipped (ReadJournal reports them).
func openCreates(path string, since time.Time) ([]JournalRecord, error) {
	var open []JournalRecord
	done := map[createKey]bool{}
	_, err := scan(path, false, func(rec JournalRecord) {
		switch rec.Event {
		case EventCreating:
			if !rec.Time.Before(since) {
				open = append(open, rec)
			}
		case EventSubmitted, EventNotMade:
			done[keyOf(rec)] = true
		}
	})
	return slices.DeleteFunc(open, func(rec JournalRecord) bool { return done[keyOf(rec)] }), err
}

// ClaimWindow is how old a journalled batch --resume still collects: the
// API keeps output files for 30 days.
const ClaimWindow = 30 * 24 * time.Hour

// JournalTag names the journal at path in the metadata of the batches its
// runs make (gptbatch_journal), so that rebuilding a lost journal takes
// back only those, not the batches of another usage file's runs under the
// same API key: a short hash of the journal's absolute path.
func JournalTag(path string) string {
	if abs, err := filepath.Abs(path); err == nil {
		path = abs
	}
	h := sha256.Sum256([]byte(path))
	return hex.EncodeToString(h[:6])
}

// NewRunID names a run in the journal and in its batches' metadata.
func NewRunID(now time.Time) string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return "run-" + now.UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(b[:])
}
