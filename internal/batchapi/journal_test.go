package batchapi

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/gptbatch/gptbatch/internal/openaitest"
	"github.com/gptbatch/gptbatch/internal/retry"
)

// instantClock is a clock whose waits are over at once.
type instantClock struct{ now time.Time }

func (c instantClock) Now() time.Time { return c.now }

func (instantClock) After(time.Duration) <-chan time.Time {
	ch := make(chan time.Time, 1)
	ch <- time.Time{}
	return ch
}

// TestJournalCreate: a batch's create is journalled around the call: its
// creating record is on disk before the batch is made, and its submitted
// record (with the lines it holds) or a not_created record follows. A
// create whose answer is lost still makes one batch, journalled once; a
// create the API refuses makes none and says so; a journal that cannot be
// written makes no batch at all.
func TestJournalCreate(t *testing.T) {
	line := `{"custom_id":"line-1","method":"POST","url":"/v1/chat/completions","body":{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}}` + "\n"
	items := []JournalItem{{CustomID: "line-1", Hash: LineHash("/v1/chat/completions", []byte(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`))}}
	tests := []struct {
		name        string
		loseCreates int
		badFile     bool // the create names a file the API does not have
		closed      bool // the journal cannot be written
		wantEvents  []string
		wantBatches int
	}{
		{name: "made", wantEvents: []string{EventCreating, EventSubmitted}, wantBatches: 1},
		{name: "answer lost, made once", loseCreates: 1, wantEvents: []string{EventCreating, EventSubmitted}, wantBatches: 1},
		{name: "refused", badFile: true, wantEvents: []string{EventCreating, EventNotMade}},
		{name: "journal not writable", closed: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := openaitest.New(openaitest.Config{Batch: openaitest.BatchConfig{Advance: openaitest.BatchManual, LoseCreates: tt.loseCreates}})
			defer srv.Close()
			now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
			api := New(Config{BaseURL: srv.URL(), Key: "sk-test", Timeout: 5 * time.Second, Retry: retry.Policy{Retries: 2}, Clock: instantClock{now}})
			ctx := context.Background()
			dir := t.TempDir()
			in := filepath.Join(dir, "in.jsonl")
			if err := os.WriteFile(in, []byte(line), 0o600); err != nil {
				t.Fatal(err)
			}
			fileID, err := api.Upload(ctx, in, "gptbatch-run-1-1.jsonl")
			if err != nil {
				t.Fatalf("Upload: %v", err)
			}
			if tt.badFile {
				fileID = "file-none"
			}
			path := filepath.Join(dir, "usage.batches.jsonl")
			j, err := OpenJournal(path)
			if err != nil {
				t.Fatal(err)
			}
			if tt.closed {
				j.Close()
			} else {
				defer j.Close()
			}
			head := JournalRecord{Run: "run-1", Chunk: 1, Create: 1, Endpoint: "/v1/chat/completions", Model: "gpt-4o-mini", InputFileID: fileID, Lines: 1}
			cr := api.Submit(ctx, nil, j, nil, head, items)

			page, err := api.List(ctx, "", 100)
			if err != nil {
				t.Fatal(err)
			}
			if len(page.Data) != tt.wantBatches {
				t.Errorf("Create made %d batches, want %d", len(page.Data), tt.wantBatches)
			}
			if made := cr.Batch.ID != ""; made != (tt.wantBatches == 1) {
				t.Errorf("Create = batch %q, want one made: %v", cr.Batch.ID, tt.wantBatches == 1)
			}
			if (cr.Unwritten != nil) != tt.closed {
				t.Errorf("Create: Unwritten = %v, want an error: %v", cr.Unwritten, tt.closed)
			}
			if cr.Unknown || cr.Unjournalled != nil {
				t.Errorf("Create: Unknown %v, Unjournalled %v; want neither", cr.Unknown, cr.Unjournalled)
			}
			if tt.badFile && cr.Failure.Status == 0 {
				t.Errorf("Create of a file the API does not have: Failure %+v, want the API's refusal", cr.Failure)
			}

			var events []string
			if _, err := scan(path, true, func(rec JournalRecord) {
				events = append(events, rec.Event)
				if rec.Run != head.Run || rec.Chunk != head.Chunk || rec.Create != head.Create || rec.InputFileID != fileID || !rec.Time.Equal(now) {
					t.Errorf("%s record %+v: not of the create asked for at %v", rec.Event, rec, now)
				}
				if rec.Event == EventSubmitted && (rec.BatchID != cr.Batch.ID || len(rec.Items) != 1 || rec.Items[0].CustomID != items[0].CustomID || rec.Items[0].Hash != items[0].Hash) {
					t.Errorf("submitted record: batch %q, items %v; want %q, %v", rec.BatchID, rec.Items, cr.Batch.ID, items)
				}
			}); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(events, tt.wantEvents) {
				t.Errorf("journal events = %v, want %v", events, tt.wantEvents)
			}
		})
	}
}
