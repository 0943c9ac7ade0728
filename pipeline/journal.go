package pipeline

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"time"

	"github.com/gptbatch/gptbatch/budget"
)

// The journal of --via batch is a file of JSON lines beside usage.md
// (usage.batches.jsonl), one record an event, appended and fsync'd: a
// batch is recorded as submitted before anything waits for it, so that
// nothing paid for is forgotten, whatever becomes of the process.

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
	// what was sent, so that --resume claims exactly the lines whose
	// content is unchanged.
	Items []JournalItem `json:"items,omitempty"`

	// Collected: how the batch ended and where its results are.
	Status       string `json:"status,omitempty"`
	OutputFileID string `json:"output_file_id,omitempty"`
	ErrorFileID  string `json:"error_file_id,omitempty"`
}

// journalAppend appends rec to the journal j.
func journalAppend(j *budget.Journal, rec JournalRecord) error {
	line, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	return j.Append(line)
}

// JournalItem is one line of a submitted batch.
type JournalItem struct {
	CustomID string
	Hash     string
}

// MarshalJSON writes the item as a pair, ["line-17","<hash>"]: a batch of
// 50,000 lines records 50,000 of them.
func (it JournalItem) MarshalJSON() ([]byte, error) {
	return json.Marshal([2]string{it.CustomID, it.Hash})
}

// UnmarshalJSON reads a pair.
func (it *JournalItem) UnmarshalJSON(b []byte) error {
	var p [2]string
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	it.CustomID, it.Hash = p[0], p[1]
	return nil
}

// JournalBatch is a batch as the journal tells it: the record of its
// submission, and what happened to it since.
type JournalBatch struct {
	JournalRecord
	Collected bool   // its results were settled: collecting again counts nothing
	Final     string // its status when collected, if it was
	Cancelled bool
}

// scanJournal calls fn with each record of the journal at path, in
// order; with items false, without the lines of a batch, to save memory.
// A line that is not a record (torn by a crash or a full disk, or edited
// by hand) is skipped, and said in skipped: one such line must not cost
// the batches recorded after it, nor stop a cron job for good.
func scanJournal(path string, items bool, fn func(rec JournalRecord)) (skipped []string, err error) {
	err = budget.ReadJournal(path, func(n int, line []byte) error {
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
		if err != nil {
			skipped = append(skipped, fmt.Sprintf("batch journal %s: line %d is not a record, skipped: %v", path, n, err))
			return nil
		}
		fn(rec)
		return nil
	})
	return skipped, err
}

// ReadJournal reads the batches recorded in the journal at path, oldest
// first, leaving out those submitted before since. With items false, the
// lines of each batch are left out, to save memory. A missing journal
// records none. Lines that are not records are skipped, and skipped says
// so, a message a line, to be reported.
func ReadJournal(path string, since time.Time, items bool) (bs []*JournalBatch, skipped []string, err error) {
	byID := map[string]*JournalBatch{}
	skipped, err = scanJournal(path, items, func(rec JournalRecord) {
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
	_, err := scanJournal(path, false, func(rec JournalRecord) {
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

// claimWindow is how old a journalled batch --resume still claims lines
// from: the API keeps output files for 30 days.
const claimWindow = 30 * 24 * time.Hour

// claims are the journalled lines --resume may collect instead of
// submitting them again, by content hash.
type claims struct {
	batches []*JournalBatch
	byHash  map[string][]claim
}

type claim struct {
	batch    int32 // in batches
	customID string
}

// loadClaims reads the journal's batches of the last 30 days into claims;
// skipped says which lines are not records.
func loadClaims(path string, now time.Time) (*claims, []string, error) {
	bs, skipped, err := ReadJournal(path, now.Add(-claimWindow), true)
	if err != nil {
		return nil, skipped, err
	}
	c := &claims{batches: bs, byHash: map[string][]claim{}}
	for i, b := range bs {
		for _, it := range b.Items {
			c.byHash[it.Hash] = append(c.byHash[it.Hash], claim{int32(i), it.CustomID})
		}
		b.Items = nil
	}
	return c, skipped, nil
}

// take claims a journalled line with this content hash, the one submitted
// last: a line resubmitted after a failure is answered in its latest batch.
func (c *claims) take(hash string) (claim, bool) {
	cs := c.byHash[hash]
	if len(cs) == 0 {
		return claim{}, false
	}
	last := cs[len(cs)-1]
	if len(cs) == 1 {
		delete(c.byHash, hash)
	} else {
		c.byHash[hash] = cs[:len(cs)-1]
	}
	return last, true
}

// lineHash is the content hash of a request: its URL and its exact body.
func lineHash(url string, body []byte) string {
	h := sha256.New()
	h.Write([]byte(url))
	h.Write([]byte{0})
	h.Write(body)
	// 96 bits: no two lines of a journal collide by chance.
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil)[:12])
}

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

// newRunID names a run in the journal and in its batches' metadata.
func newRunID(now time.Time) string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return "run-" + now.UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(b[:])
}

// errNoJournal says --via batch was asked for without a journal.
var errNoJournal = errors.New("--via batch needs a journal file beside the usage file")
