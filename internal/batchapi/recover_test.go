package batchapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"sync"
	"testing"
	"time"

	openai "github.com/sashabaranov/go-openai"

	"github.com/gptbatch/gptbatch/internal/openaitest"
	"github.com/gptbatch/gptbatch/internal/retry"
)

// TestRecoverJournal: RecoverJournal pages through the batches the API
// lists, newest first, down to since, and rebuilds those gptbatch tagged
// that the journal lacks, oldest first, from their input files: endpoint,
// model, lines, and items hashing each line's exact body as submission
// does. A batch without tags, one journalled, one older than since are
// left alone; one whose input file was deleted says so; a dry run writes
// nothing.
func TestRecoverJournal(t *testing.T) {
	var mu sync.Mutex
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return now
	}
	setNow := func(t time.Time) {
		mu.Lock()
		defer mu.Unlock()
		now = t
	}
	srv := openaitest.New(openaitest.Config{Now: clock, Batch: openaitest.BatchConfig{Advance: openaitest.BatchManual}})
	defer srv.Close()
	api := New(Config{BaseURL: srv.URL(), Key: "sk-test"})
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "usage.batches.jsonl")

	type line struct{ url, body string }
	// newBatch creates a batch of lines tagged with run and chunk (none if run
	// is ""), and says what its journal record should be.
	n := 0
	newBatch := func(run string, chunk int, lines ...line) (openai.Batch, JournalRecord) {
		t.Helper()
		n++
		file := filepath.Join(dir, fmt.Sprintf("in-%d.jsonl", n))
		var data []byte
		rec := JournalRecord{Event: EventSubmitted, Run: run, Chunk: chunk, Endpoint: lines[0].url, Lines: len(lines)}
		if run != "" {
			rec.Create = 1
		}
		for i, l := range lines {
			id := "line-" + strconv.Itoa(i+1)
			data = append(data, fmt.Sprintf(`{"custom_id":%q,"method":"POST","url":%q,"body":%s}`+"\n", id, l.url, l.body)...)
			rec.Items = append(rec.Items, JournalItem{CustomID: id, Hash: LineHash(l.url, []byte(l.body))})
		}
		var m struct{ Model string }
		if err := json.Unmarshal([]byte(lines[0].body), &m); err != nil {
			t.Fatal(err)
		}
		rec.Model = m.Model
		if err := os.WriteFile(file, data, 0o600); err != nil {
			t.Fatal(err)
		}
		fileID, err := api.Upload(ctx, file, filepath.Base(file))
		if err != nil {
			t.Fatalf("upload: %v", err)
		}
		var meta map[string]any
		if run != "" {
			meta = map[string]any{"gptbatch_run": run, "gptbatch_chunk": strconv.Itoa(chunk), "gptbatch_create": "1", "gptbatch_journal": JournalTag(path)}
		}
		switch run {
		case "run-untagged": // made by a version that did not tag its journal
			delete(meta, "gptbatch_journal")
		case "run-other": // made by a run of another usage file
			meta["gptbatch_journal"] = JournalTag(filepath.Join(dir, "other", "usage.batches.jsonl"))
		}
		bo, err := api.Create(ctx, fileID, lines[0].url, meta)
		if err != nil {
			t.Fatalf("create: %v", err)
		}
		rec.BatchID, rec.InputFileID, rec.Time = bo.ID, fileID, time.Unix(int64(bo.CreatedAt), 0)
		return bo, rec
	}
	chat := func(s string) line {
		// Spaces and key order as the user wrote them: the hash is of
		// the bytes sent.
		return line{"/v1/chat/completions", `{"model":"gpt-4o-mini", "messages":[{"role":"user","content":` + strconv.Quote(s) + `}],"temperature":0}`}
	}
	embed := func(s string) line {
		return line{"/v1/embeddings", `{"input":` + strconv.Quote(s) + `,"model":"text-embedding-3-small"}`}
	}

	newBatch("run-old", 1, chat("too old"))
	setNow(now.Add(40 * 24 * time.Hour))
	since := now.Add(-30 * 24 * time.Hour)
	var want []JournalRecord
	// More than a page of 100.
	for c := 1; c <= 101; c++ {
		if c == 50 {
			newBatch("", 0, chat("not gptbatch's"))
		}
		if c == 55 {
			newBatch("run-other", 1, chat("another journal's"))
		}
		if c == 60 {
			_, rec := newBatch("run-b", 1, chat("journalled"))
			j, err := OpenJournal(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := j.Append(rec); err != nil {
				t.Fatal(err)
			}
			j.Close()
		}
		ls := []line{chat(fmt.Sprint("q", c)), chat(fmt.Sprint("r", c))}
		if c%2 == 0 {
			ls = []line{embed(fmt.Sprint("e", c))}
		}
		run := "run-a"
		if c == 101 {
			run = "run-untagged"
		}
		_, rec := newBatch(run, c, ls...)
		want = append(want, rec)
	}
	gone, _ := newBatch("run-c", 1, chat("collected"))
	if err := api.DeleteFile(ctx, gone.InputFileID); err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}

	for _, write := range []bool{false, true} {
		rs, _, err := RecoverJournal(ctx, api, path, since, write, false)
		if err != nil {
			t.Fatalf("RecoverJournal(write %v): %v", write, err)
		}
		if len(rs) != len(want)+1 {
			t.Fatalf("RecoverJournal(write %v): %d batches, want %d", write, len(rs), len(want)+1)
		}
		for i, w := range want {
			got := rs[i]
			w.Items = nil
			if got.Err != nil || !reflect.DeepEqual(got.Record, w) {
				t.Errorf("RecoverJournal(write %v)[%d] = %+v, %v; want %+v", write, i, got.Record, got.Err, w)
			}
		}
		if last := rs[len(rs)-1]; last.Batch.ID != gone.ID || !errors.Is(last.Err, ErrInputDeleted) {
			t.Errorf("RecoverJournal(write %v): last = %s, %v; want %s, %v", write, last.Batch.ID, last.Err, gone.ID, ErrInputDeleted)
		}
		if !write {
			if after, _ := os.ReadFile(path); string(after) != string(before) {
				t.Errorf("RecoverJournal(write false) changed the journal")
			}
		}
	}
	bs, _, err := ReadJournal(path, time.Time{}, true)
	if err != nil {
		t.Fatal(err)
	}
	var got []JournalRecord
	for _, b := range bs[1:] { // after run-b's, journalled before
		got = append(got, b.JournalRecord)
	}
	for i := range got {
		// The journal's time is read back in local time.
		got[i].Time = got[i].Time.UTC()
		want[i].Time = want[i].Time.UTC()
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("journal after RecoverJournal:\n%+v\nwant\n%+v", got, want)
	}
	rs, _, err := RecoverJournal(ctx, api, path, since, true, false)
	if err != nil || len(rs) != 1 || rs[0].Batch.ID != gone.ID {
		t.Errorf("RecoverJournal again = %+v, %v; want only %s, which cannot be", rs, err, gone.ID)
	}
	// With all, another journal's batch too.
	rs, _, err = RecoverJournal(ctx, api, path, since, false, true)
	if err != nil || len(rs) != 2 || rs[0].Record.Run != "run-other" || rs[0].Err != nil {
		t.Errorf("RecoverJournal(all) = %+v, %v; want run-other's batch, then %s", rs, err, gone.ID)
	}
}

// TestRecoverJournalThroughADroppedDownload: a download of a batch's input
// file that drops half way goes on where it broke off, and the batch is
// rebuilt with every line of its file, each once and in order.
func TestRecoverJournalThroughADroppedDownload(t *testing.T) {
	srv := openaitest.New(openaitest.Config{Batch: openaitest.BatchConfig{Advance: openaitest.BatchManual}})
	defer srv.Close()
	api := New(Config{BaseURL: srv.URL(), Key: "sk-test", Timeout: 5 * time.Second, Retry: retry.Policy{Retries: 2}, Clock: instantClock{time.Now()}})
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "usage.batches.jsonl")
	const url = "/v1/chat/completions"
	var data []byte
	var want []JournalItem
	for i := range 300 {
		id := "line-" + strconv.Itoa(i+1)
		body := fmt.Sprintf(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"question %d"}]}`, i)
		data = append(data, fmt.Sprintf(`{"custom_id":%q,"method":"POST","url":%q,"body":%s}`+"\n", id, url, body)...)
		want = append(want, JournalItem{CustomID: id, Hash: LineHash(url, []byte(body))})
	}
	file := filepath.Join(dir, "in.jsonl")
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
	fileID, err := api.Upload(ctx, file, "in.jsonl")
	if err != nil {
		t.Fatalf("upload: %v", err)
	}
	meta := Tags(JournalRecord{Run: "run-a", Chunk: 1, Create: 1}, JournalTag(path))
	bo, err := api.Create(ctx, fileID, url, meta)
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	srv.CutDownloads(1, 0.5)
	rs, _, err := RecoverJournal(ctx, api, path, time.Now().Add(-time.Hour), true, false)
	if err != nil || len(rs) != 1 || rs[0].Batch.ID != bo.ID || rs[0].Err != nil {
		t.Fatalf("RecoverJournal = %+v, %v; want batch %s rebuilt", rs, err, bo.ID)
	}
	if srv.Cut() != 1 {
		t.Errorf("%d downloads cut, want 1", srv.Cut())
	}
	bs, _, err := ReadJournal(path, time.Time{}, true)
	if err != nil || len(bs) != 1 {
		t.Fatalf("ReadJournal = %d batches, %v; want 1", len(bs), err)
	}
	if got := bs[0].Items; !reflect.DeepEqual(got, want) {
		t.Errorf("rebuilt items: %d, want the file's %d in order", len(got), len(want))
	}
}
